"""The render oracle (tests/render_oracle.py): 300 random valid specs render to exactly the files they rendered to
when their digests were last written on purpose. A change to the generator or the templates that is meant to keep
the emitted code must keep all of them; one that is meant to change it rewrites the digests
(`python tests/render_oracle.py`) in the same commit as the goldens."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor

from render_oracle import DIGESTS, SPECS, digests_of


def test_the_oracle_holds_a_few_hundred_distinct_specs() -> None:
    specs, digests = json.loads(SPECS.read_text()), json.loads(DIGESTS.read_text())
    assert len(specs) == len(digests) >= 300
    assert len({json.dumps(d["train.py"]) for d in digests}) >= 290, "the specs should give distinct loops"


def test_every_oracle_spec_renders_to_the_recorded_bytes() -> None:
    specs, expected = json.loads(SPECS.read_text()), json.loads(DIGESTS.read_text())
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        actual = list(pool.map(digests_of, specs, chunksize=10))
    differing = [
        f"spec {index} {json.dumps(specs[index], sort_keys=True)}: "
        + ", ".join(sorted(path for path in set(want) | set(got) if want.get(path) != got.get(path)))
        for index, (want, got) in enumerate(zip(expected, actual))
        if want != got
    ]
    assert not differing, f"{len(differing)} of {len(specs)} specs render differently:\n" + "\n".join(differing[:20])
