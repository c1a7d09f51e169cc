from eo_fusion.cli import run

run()
