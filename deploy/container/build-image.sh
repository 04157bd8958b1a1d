#!/bin/sh
# Builds the nhiscope image of ./Containerfile with podman, from a Debian 12 root filesystem made
# here by debootstrap (no image is pulled from any registry).
#
#   deploy/container/build-image.sh BINARY [TAG]
#
# BINARY: the nhiscope binary to put in the image (`cargo xtask build --release` makes
# target/release/nhiscope). TAG: the image's name, default localhost/nhiscope:dev.
# Environment: NHISCOPE_ROOTFS, where the root filesystem is kept between builds (default
# target/container/rootfs under the current directory); NHISCOPE_DEBIAN_MIRROR (default
# http://deb.debian.org/debian).
#
# Used by `cargo xtask container` and tests/tests/kubernetes.rs. Needs root, podman, runc and
# debootstrap (Debian packages). runc rather than podman's default crun, which refuses hosts with
# controllers on both cgroup hierarchies ("cgroups in hybrid mode not supported").
set -eu

binary=${1:?usage: build-image.sh BINARY [TAG]}
tag=${2:-localhost/nhiscope:dev}
here=$(cd "$(dirname "$0")" && pwd)
rootfs=${NHISCOPE_ROOTFS:-$PWD/target/container/rootfs}
mirror=${NHISCOPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/nhiscope-base:bookworm

if ! podman image exists "$base"; then
    if [ ! -x "$rootfs/bin/sh" ]; then
        rm -rf "$rootfs.partial"
        mkdir -p "$(dirname "$rootfs")"
        debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs.partial" "$mirror"
        # What an image does not need: package lists and caches, documentation.
        rm -rf "$rootfs.partial"/var/cache/apt/* "$rootfs.partial"/var/lib/apt/lists/* \
            "$rootfs.partial"/usr/share/doc/* "$rootfs.partial"/usr/share/man/*
        mv "$rootfs.partial" "$rootfs"
    fi
    tar -C "$rootfs" -c . | podman import - "$base"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/nhiscope"
# The build's RUN step needs limits no higher than this process's (root here may lack
# CAP_SYS_RESOURCE; podman's defaults would raise them).
podman --runtime runc build --pull=never \
    --ulimit "nofile=$(ulimit -n):$(ulimit -Hn)" --ulimit nproc=32768:32768 \
    --build-arg "BASE=$base" -f "$here/Containerfile" -t "$tag" "$context"
