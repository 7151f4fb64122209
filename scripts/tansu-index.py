#!/usr/bin/env python3
"""Adds the index tansu 0.6.0's sqlite schema lacks, to a running broker's database.

    scripts/tansu-index.py PATH/TO/tansu.db

tansu reads the headers of every record a fetch returns with one query on
header (topition, offset_id), and the table has no index: each query scans every
header ever written, so a fetch costs (records returned) x (all headers). Past
about 10,000 records a 1 MB fetch outlasts librdkafka's 60 s request timeout
and is retried forever (a consumer stalls), and as tansu serves its storage one
request at a time, produce requests queue behind it until they time out too.

tansu creates its tables before it opens its port: run this once the port is
open. It is idempotent, so running it after every start is fine.
"""
import sqlite3
import sys

INDEX = "create index if not exists header_topition_offset on header (topition, offset_id)"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        db = sqlite3.connect(sys.argv[1], timeout=30)
        db.execute(INDEX)
        db.commit()
    except sqlite3.Error as e:
        print(f"tansu-index: {sys.argv[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
