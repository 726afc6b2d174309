import sys

try:
    from eplb.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load
    print("eplb: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
