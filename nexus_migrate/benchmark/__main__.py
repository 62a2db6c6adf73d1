from ..settings import run_cli
from .cli import main

run_cli(main)
