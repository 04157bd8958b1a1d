//! The live feed as the dashboard reads it: each line from the socket parsed into a
//! `Message` (or counted as garbled), handed to the `App`, then every view drawn. A daemon of
//! another version, or anything else listening on the socket, must not crash the dashboard.

use std::time::{Duration, UNIX_EPOCH};

use nhiscope::{
    publish::live::protocol::Message,
    view::tui::{
        app::{App, View},
        model::{Subject, Update},
    },
};
use ratatui::{buffer::Buffer, layout::Rect, widgets::Widget};

const VIEWS: [View; 5] = [
    View::Overview,
    View::Drift,
    View::Stream,
    View::Detail,
    View::Health,
];

pub fn check(data: &[u8]) {
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut app = App::new("/run/nhiscope/live.sock", now);
    for line in data.split(|&b| b == b'\n') {
        let update = match serde_json::from_slice::<Message>(line) {
            Ok(m) => {
                if let Message::Event { event } = &m {
                    let _ = event.ts.as_nanos();
                    let _ = event.destination();
                }
                Update::Message(m)
            }
            Err(e) => Update::Garbled(e.to_string()),
        };
        app.on_update(update);
    }
    app.tick(now + Duration::from_secs(90));
    let subject = app
        .registry
        .first()
        .map_or(Subject::Unregistered, |n| Subject::Nhi(n.id.clone()));
    app.detail = Some(subject);
    // One view per input, picked by its length (the fuzzer varies that as freely as the bytes):
    // drawing all five cost nine runs in ten, every cell being an allocation that ASan slows.
    app.view = VIEWS[data.len() % VIEWS.len()];
    // The dashboard's smallest size and the usual terminal's.
    for area in [Rect::new(0, 0, 60, 12), Rect::new(0, 0, 80, 24)] {
        let mut buf = Buffer::empty(area);
        (&app).render(area, &mut buf);
    }
}
