"""Regenerate docs/synth_contact_sheet.png (the README's picture of `bonedeploy synth` output).

    python docs/make_contact_sheet.py [--seed 0] [--out docs/synth_contact_sheet.png]
"""

import argparse
from pathlib import Path

from bonedeploy.data.synth.contact_sheet import save_contact_sheet

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("synth_contact_sheet.png"))
    args = ap.parse_args()
    print(save_contact_sheet(args.out, seed=args.seed))
