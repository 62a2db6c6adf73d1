"""scripts/benchmark: migrations applied to a populated api_requests while a
writer writes as the proxy does, upstream's way (each migration's statements
in one transaction, indexes built without CONCURRENTLY, backfills as single
statements) and ours (yoyo apply), and what a proxy operator pays for the
schema. In parts:

- conversations: 001 and 002 with the writer inserting; the dashboard's
  conversation views before and after 002; each index built alone, plainly
  and concurrently, with no writer.
- chain: 003 to 012 on seeded history (Task calls, sub-agents, hash chains)
  with the writer inserting as an older proxy does and recording each
  response a second later, and a streaming standby replaying (on the local
  database the benchmark makes one; elsewhere --standby-url); for each
  backfill step its time, the rows it updated and whether any row was
  updated twice, the WAL it wrote, its full-page images, the checkpoints
  meanwhile and the standby's replay lag; the writer alone as long as our
  longest backfill took, after our chain (while autovacuum clears what it
  left) and on a fresh copy (the floor the targets read); the table's size
  and dead rows before and after.
- write-cost: the proxy's writes, one request at a time, on our schema after
  011 and on a copy of the same table with upstream's index set, in turns:
  requests per second, WAL per request, and the size of every index.
- walk: 005's backfill with no writer at a small max_wal_size (set for the
  part, put back after), upstream's way, ours and its one statement alone:
  the WAL, full-page images and checkpoints of the walk itself.

It works in scratch databases of its own on the server (nexus_benchmark_*,
dropped at the end, and replaced if a previous run left them). The database in
the URL is only connected to; its tables are never read or written. The role
needs CREATEDB.

Reports apply times, the latency of the writer's statements while each
migration applies (p50, p99, max; a statement's latency counts from when it
was due, so statements queued behind a blocked one count their wait), failed
writes, what the writes waited on (a lock, or the disk), what the server
wrote, how far a standby fell behind, and the targets met or missed. Writes
the numbers as JSON and latency charts as PNG. NEXUS_MAX_REPLICA_LAG
(seconds, default 1) is the bound on the standby's lag.
"""
