"""scripts/benchmark's command line: which parts to run, at what size, where
the numbers go."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from .. import PROJECT_ROOT
from ..errors import OperatorError
from . import __doc__ as DESCRIPTION
from . import chain, chainreport, conversations, standby, walk, walfloor, writecost, writer
from .plot import require_matplotlib
from .report import latency_chart, target_lines
from .scratch import Server
from .seed import REQUESTS_PER_CONVERSATION, SEEDED, seed

# Each part: the module that reads its results (report(), panels()) and what it measures.
PARTS = {
    "conversations": (conversations, "001 and 002 both ways with the writer inserting; the dashboard's views; "
                                     "each index built alone"),
    "chain": (chainreport, "003 to 012 both ways with the writer inserting and recording responses, and a standby "
                           "replaying; each backfill's time, row updates, WAL, full-page images, checkpoints and the "
                           "standby's lag; the writer alone as long as our longest backfill, after our chain and on a "
                           "fresh copy; the table's size and dead rows before and after"),
    "write-cost": (writecost, "the proxy's writes, one request at a time, on our schema after 011 and on a copy "
                              "with upstream's index set: requests per second, WAL per request, index sizes"),
    "walk": (walk, "005's backfill alone after 003 and 004, no writer, at --walk-max-wal-size: upstream's 005 in "
                   "one transaction, ours, and the backfill's one statement; WAL, full-page images, checkpoints, "
                   "WAL per changed row, time"),
    "wal-floor": (walfloor, "the writer and the standby while one session writes nothing but WAL at set rates (and, "
                            "after the chain, at the rates its backfills wrote at and would need for the time "
                            "target): what the WAL alone costs the proxy's commits on this machine"),
}
MIN_REQUESTS = REQUESTS_PER_CONVERSATION * 4


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other failure of the benchmark
        raise OperatorError(f"{message} (see scripts/benchmark --help)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="scripts/benchmark", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", choices=list(PARTS), metavar="PART",
                        help="a part to run, again for several (default: all of them): "
                             + "; ".join(f"{name}: {what}" for name, (_, what) in PARTS.items()))
    parser.add_argument("--requests", type=int, default=1_000_000, metavar="N",
                        help="requests to seed api_requests with (default 1,000,000)")
    parser.add_argument("--insert-every-ms", type=float, default=5.0, metavar="MS",
                        help="the writer inserts one request every MS milliseconds (default 5)")
    parser.add_argument("--respond-after-ms", type=float, default=chain.RESPOND_AFTER_SECONDS * 1000, metavar="MS",
                        help="in the chain, the writer records each request's response MS milliseconds after the "
                             f"request was due (default {chain.RESPOND_AFTER_SECONDS * 1000:g})")
    parser.add_argument("--query-runs", type=int, default=15, metavar="N",
                        help="times each dashboard query runs; the median counts (default 15)")
    parser.add_argument("--write-turns", type=int, default=writecost.TURNS, metavar="N",
                        help=f"in write-cost, the turns each side takes (default {writecost.TURNS})")
    parser.add_argument("--write-requests-per-turn", type=int, default=writecost.REQUESTS_PER_TURN, metavar="N",
                        help=f"in write-cost, the requests of a turn (default {writecost.REQUESTS_PER_TURN:,})")
    parser.add_argument("--floor-seconds-max", type=float, default=chain.FLOOR_SECONDS_MAX, metavar="S",
                        help="in the chain, the writer alone (after our chain, then on a fresh copy: the floor) "
                             f"writes as long as our longest backfill took, at least {chain.FLOOR_SECONDS_MIN:g} s "
                             "and at most S "
                             f"(default {chain.FLOOR_SECONDS_MAX:g})")
    parser.add_argument("--standby-url", metavar="URL",
                        help="in the chain and wal-floor, with --database-url: a streaming standby of that server "
                             "whose replay lag to follow (default: none; on the local database the benchmark makes its own "
                             "standby and removes it at the end)")
    parser.add_argument("--standby-folder", type=Path, metavar="DIR",
                        help="in the chain and wal-floor on the local database: the folder in which the benchmark "
                             f"makes its standby, in a folder {standby.STANDBY_FOLDER} of its own removed at the end "
                             "(default: the local database's folder); another disk's, so that the standby's writes "
                             "and fsyncs do not share the primary's disk, as an operator's standby does not")
    parser.add_argument("--no-standby", action="store_true",
                        help="in the chain and wal-floor, no standby (not even the local database's own)")
    parser.add_argument("--lone-commit", action="store_true",
                        help="in the chain and wal-floor, a session beside the writer that commits alone every "
                             f"{writer.LONE_COMMIT_EVERY * 1000:g} ms, timed apart: what a commit waits without the "
                             "writer's queue (off by default: the backfills' throttle counts its waits for the WAL "
                             "like any session's)")
    parser.add_argument("--walk-max-wal-size", default=walk.DEFAULT_MAX_WAL_SIZE, metavar="SIZE",
                        help="in walk, the server's max_wal_size while it runs, set by ALTER SYSTEM and put back "
                             "after (a superuser's right; else the server's own) "
                             f"(default {walk.DEFAULT_MAX_WAL_SIZE})")
    parser.add_argument("--wal-floor-rates", default=",".join(f"{r:g}" for r in walfloor.DEFAULT_RATES_MB),
                        metavar="MB,MB",
                        help="in wal-floor, the WAL rates to write beside the writer, in MB per second, besides 0 "
                             f"and the chain's (default {','.join(f'{r:g}' for r in walfloor.DEFAULT_RATES_MB)})")
    parser.add_argument("--wal-floor-seconds", type=float, default=walfloor.DEFAULT_SECONDS, metavar="S",
                        help=f"in wal-floor, how long each rate runs (default {walfloor.DEFAULT_SECONDS:g})")
    parser.add_argument("--wal-floor-rounds", type=int, default=walfloor.DEFAULT_ROUNDS, metavar="N",
                        help="in wal-floor, how many times to run every rate, each round in the order opposite to the "
                             "one before; the target reads the median of the rounds' ratios "
                             f"(default {walfloor.DEFAULT_ROUNDS})")
    parser.add_argument("--wal-floor-chain", type=Path, metavar="FILE",
                        help="in wal-floor without the chain in the same run: the benchmark.json of an earlier run "
                             "whose chain part gives the two rates its numbers ask for")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmark-results", metavar="DIR",
                        help="where benchmark.json and the charts (benchmark-PART.png) go (default benchmark-results/)")
    parser.add_argument("--database-url", metavar="URL",
                        help="a PostgreSQL server to run on, as postgresql://USER:PASSWORD@HOST:PORT/DBNAME "
                             "(default: the local database of scripts/localdb, started if need be)")
    args = parser.parse_args(argv)
    if args.requests < MIN_REQUESTS:
        parser.error(f"--requests must be at least {MIN_REQUESTS}")
    if args.insert_every_ms <= 0:
        parser.error("--insert-every-ms must be above 0")
    if args.respond_after_ms < 0:
        parser.error("--respond-after-ms must be 0 or more")
    if args.write_turns < 1 or args.write_requests_per_turn < 1:
        parser.error("--write-turns and --write-requests-per-turn must be at least 1")
    if args.query_runs < 1:
        parser.error("--query-runs must be at least 1")
    if args.floor_seconds_max <= 0:
        parser.error("--floor-seconds-max must be above 0")
    if args.no_standby and args.standby_url:
        parser.error("--no-standby and --standby-url: one or the other")
    if args.standby_folder and (args.no_standby or args.database_url):
        parser.error("--standby-folder is where the local database's standby goes: not with --no-standby or "
                     "--database-url")
    if args.standby_folder and not args.standby_folder.is_dir():
        parser.error(f"--standby-folder {args.standby_folder}: not a folder")
    if args.standby_url and not args.database_url:
        parser.error("--standby-url goes with --database-url (on the local database the benchmark makes its own)")
    if not walk.SIZE_SETTING.match(args.walk_max_wal_size):
        parser.error("--walk-max-wal-size must be a size as PostgreSQL writes one: a whole number and kB, MB, GB "
                     "or TB, such as 64MB")
    try:
        args.wal_floor_rates = [float(r) for r in args.wal_floor_rates.split(",") if r.strip()]
    except ValueError:
        args.wal_floor_rates = None
    if args.wal_floor_rates is None or any(not 0 < r < 10_000 for r in args.wal_floor_rates):
        parser.error("--wal-floor-rates must be rates in MB per second, above 0, separated by commas, such as 4,8")
    if args.wal_floor_seconds <= 0:
        parser.error("--wal-floor-seconds must be above 0")
    if args.wal_floor_rounds < 1:
        parser.error("--wal-floor-rounds must be at least 1")
    if args.wal_floor_chain:
        try:
            args.wal_floor_chain = _chain_results(args.wal_floor_chain)
        except OperatorError as exc:
            parser.error(str(exc))
    args.part = [p for p in PARTS if p in (args.part or PARTS)]
    return args


def _chain_results(path: Path) -> dict:
    """The chain part's numbers in an earlier run's benchmark.json, or one line saying why not."""
    try:
        found = json.loads(path.read_text()).get("chain")
    except OSError as exc:
        raise OperatorError(f"--wal-floor-chain {path}: {exc.strerror or exc}") from None
    except (ValueError, AttributeError):
        raise OperatorError(f"--wal-floor-chain {path}: not a benchmark.json (JSON of scripts/benchmark)") from None
    if not isinstance(found, dict) or not walfloor.chain_rates(found):
        raise OperatorError(f"--wal-floor-chain {path}: no chain part with backfills both ways in it "
                            "(scripts/benchmark --part chain writes one)")
    return found


def run(server: Server, args: argparse.Namespace) -> dict:
    results: dict = {"date": date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.platform()}",
                     "server": server.execute("SHOW server_version")[0][0], "requests": args.requests,
                     "parts": args.part}
    print(f"Seeding {args.requests:,} requests into {SEEDED} ...", flush=True)
    started = time.monotonic()
    seed(server, args.requests)
    results["seed_seconds"] = round(time.monotonic() - started, 1)
    results["seeded_size"] = server.size(SEEDED)
    print(f"  {results['seed_seconds']} s, {results['seeded_size']}", flush=True)
    if "conversations" in args.part:
        results["conversations"] = conversations.run(server, args.requests, args.insert_every_ms / 1000,
                                                     args.query_runs)
    choice = (standby.choose(off=args.no_standby, standby_url=args.standby_url, database_url=args.database_url,
                             folder=args.standby_folder)
              if {"chain", "wal-floor"} & set(args.part) else None)
    if "chain" in args.part:
        results["chain"] = chain.run(server, args.requests, args.insert_every_ms / 1000,
                                     args.respond_after_ms / 1000, choice, args.floor_seconds_max, args.lone_commit)
    if "write-cost" in args.part:
        results["write-cost"] = writecost.run(server, args.requests, args.write_turns, args.write_requests_per_turn)
    if "walk" in args.part:
        results["walk"] = walk.run(server, args.requests, args.walk_max_wal_size)
    if "wal-floor" in args.part:
        results["wal-floor"] = walfloor.run(server, args.requests, args.insert_every_ms / 1000,
                                            args.respond_after_ms / 1000, choice, args.wal_floor_rates,
                                            args.wal_floor_seconds, results.get("chain", args.wal_floor_chain),
                                            args.wal_floor_rounds, args.lone_commit)
    return results


def report(results: dict) -> str:
    lines = [f"{results['requests']:,} requests seeded ({results['seeded_size']}), {results['server']}, "
             f"{results['machine']}"]
    for part in results["parts"]:
        module = PARTS[part][0]
        lines += ["", f"== {part} ==", *module.report(results[part]), "", "targets:",
                  *target_lines(results[part]["targets"])]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse(argv)
    require_matplotlib()  # now, not after minutes of measuring
    standby.max_replica_lag()  # a malformed bound, too
    if args.database_url:
        url = args.database_url
    else:
        from ..database.local import start_local_database
        url = start_local_database()
    server = Server(url)
    try:
        results = run(server, args)
    finally:
        server.drop_created()
        server.close()
    print()
    print(report(results))
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "benchmark.json"]
    written[0].write_text(json.dumps(results, indent=1) + "\n")
    for part in results["parts"]:
        panels = PARTS[part][0].panels(results[part])
        if panels:
            written.append(args.out / f"benchmark-{part}.png")
            written[-1].write_bytes(latency_chart(panels))
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    return 0
