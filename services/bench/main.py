"""The benchmark's command line: run (or re-read) the results, print them, exit 0 if clean."""

import json
import sys

from services.bench.options import options_from, parser
from services.bench.report import markdown, targets_table
from services.bench.run import run_bench


def main(argv: list[str] | None = None, prog: str = "python -m services.bench") -> int:
    """Exit 1 when any answer failed or differed from llmsim's; a missed target is a finding
    in the output, not a failure."""
    args = parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        print(markdown(json.loads(args.from_json.read_text())))
        return 0
    options = options_from(args)
    result = run_bench(options)
    print()
    print(markdown(result) if options.markdown else targets_table(result))
    for service, counts in result["log_problems"].items():
        for what, count in counts.items():
            print(f"log: {service}: {count} x {what}")
    where = [str(p) for p in (options.json_path, options.plot_path) if p]
    print(f"done in {result['wall_s']:.0f} s" + (f"; wrote {', '.join(where)}" if where else ""))
    rows = [s[n] for s in result["scenarios"] for n in ("direct", "tokenbus") if n in s]
    bad = sum(r["errors"] + r["mismatches"] for r in rows)
    return 1 if bad else 0
