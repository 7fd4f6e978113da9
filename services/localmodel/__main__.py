"""`python -m services.localmodel [--port N]`: the local model server, settings from the
environment (`TOKENBUS_LOCALMODEL_*`); the same as `tokenbus localmodel`."""

import argparse

from services.localmodel.app import run
from services.localmodel.settings import LocalModelSettings

parser = argparse.ArgumentParser(prog="python -m services.localmodel", description=__doc__)
parser.add_argument("--port", type=int, default=None, help="Override the port from settings")
args = parser.parse_args()
run(LocalModelSettings(**({"port": args.port} if args.port is not None else {})))
