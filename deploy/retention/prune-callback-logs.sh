#!/bin/sh
# Delete the callback logs' day partitions older than DAYS days.
#
#     prune-callback-logs.sh DAYS LOGDIR
#
# The receiver writes LOGDIR/status/day=YYYY-MM-DD/ and LOGDIR/inbound/day=YYYY-MM-DD/
# (the UTC day each callback was received). A partition whose day is more than DAYS days
# before today (UTC) is removed whole. The compaction lock (LOGDIR/_journal/compact.lock)
# is held meanwhile, so no compaction merges files in a partition being removed.
# Callbacks not yet compacted (LOGDIR/_journal) are never touched.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 DAYS LOGDIR" >&2
    exit 2
fi
days=$1
logdir=$2
case "$days" in
    '' | *[!0-9]*) echo "DAYS must be a whole number of days" >&2; exit 2 ;;
esac
if [ ! -d "$logdir/_journal" ]; then
    echo "$logdir is not a callback log directory (no _journal)" >&2
    exit 2
fi
cutoff=$(date -u -d "$days days ago" +%Y-%m-%d)

prune() {
    for kind in status inbound; do
        [ -d "$logdir/$kind" ] || continue
        for dir in "$logdir/$kind"/day=*; do
            [ -d "$dir" ] || continue
            day=${dir##*/day=}
            # ISO dates compare as strings; anything not shaped like one is left alone
            case "$day" in
                [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
                *) continue ;;
            esac
            if [ "$day" \< "$cutoff" ]; then
                rm -rf -- "$dir"
                echo "removed $dir"
            fi
        done
    done
}

exec 9>>"$logdir/_journal/compact.lock"
flock -w 300 9
prune
