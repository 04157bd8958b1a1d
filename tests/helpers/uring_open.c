/* Opens a file through io_uring (IORING_OP_OPENAT), as a process that wants to avoid the open
 * system calls would. Used by tests/tests/doors.rs.
 *
 *   uring_open PATH          the new fd goes into the process's file table
 *   uring_open PATH fixed    the new file goes into a fixed-file slot of the ring
 *
 * Prints the result (an fd, a slot index or -errno) and exits 0 when the open succeeded. */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: uring_open PATH [fixed]\n");
        return 2;
    }
    int fixed = argc > 2 && strcmp(argv[2], "fixed") == 0;
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) < 0) {
        perror("io_uring_queue_init");
        return 2;
    }
    if (fixed) {
        int fds[1] = {-1};
        if (io_uring_register_files(&ring, fds, 1) < 0) {
            perror("io_uring_register_files");
            return 2;
        }
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (fixed)
        io_uring_prep_openat_direct(sqe, AT_FDCWD, argv[1], O_RDONLY, 0, 0);
    else
        io_uring_prep_openat(sqe, AT_FDCWD, argv[1], O_RDONLY, 0);
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) {
        perror("io_uring_wait_cqe");
        return 2;
    }
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    printf("%d\n", res);
    io_uring_queue_exit(&ring);
    return res < 0;
}
