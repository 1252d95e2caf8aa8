"""The TypeScript checks (`scripts/typecheck.py`, run by `make test`) notice what they guard.

scripts/test.sh runs the checks themselves on the repository; these tests show each one fails
when it should: a README example that does not compile against the package, declarations that
no longer match the client, an example the script cannot find.
"""

from __future__ import annotations

import pathlib
import shutil
from types import ModuleType

import pytest
from _contract_helpers import ROOT, load_script


@pytest.fixture(scope="module")
def typecheck() -> ModuleType:
    return load_script("typecheck")


def test_the_example_is_the_ts_block_after_the_marker(typecheck: ModuleType) -> None:
    text = ("```ts\nconst before = 0;\n```\n" + typecheck.MARKER + "\n\nSome words.\n\n"
            "```ts\nconst x: number = 1;\n```\n\n```ts\nconst after = 2;\n```\n")
    assert typecheck.readme_example(text) == "const x: number = 1;\n"
    assert typecheck.readme_example((ROOT / "README.md").read_text()).startswith("import {")


def test_a_readme_without_the_marker_or_the_block_is_an_error(typecheck: ModuleType) -> None:
    with pytest.raises(typecheck.CheckError, match=r"no line .*typescript-example"):
        typecheck.readme_example("```ts\nconst x = 1;\n```\n")
    with pytest.raises(typecheck.CheckError, match=r"expected a ```ts fenced block"):
        typecheck.readme_example(typecheck.MARKER + "\n```js\nconst x = 1;\n```\n")


def test_an_example_that_misuses_the_package_fails_to_compile(
        typecheck: ModuleType, tmp_path: pathlib.Path) -> None:
    example = typecheck.readme_example((ROOT / "README.md").read_text())
    wrong = example.replace("{ everyMs: TIERS.overview }", '{ everyMs: "250" }', 1)
    assert wrong != example
    with pytest.raises(typecheck.CheckError) as err:
        typecheck.compile_example(wrong, tmp_path / "app", "nodenext")
    assert "main.ts" in str(err.value)
    assert "TS2322" in str(err.value)  # '"250"' is not assignable to type 'number'


def test_declarations_that_no_longer_match_the_client_are_named(
        typecheck: ModuleType, tmp_path: pathlib.Path) -> None:
    fresh = tmp_path / "fresh"
    typecheck.emit_declarations(fresh)
    committed = tmp_path / "committed"
    shutil.copytree(ROOT / typecheck.TYPES, committed)
    assert typecheck.compare_declarations(fresh, committed) == []

    client = committed / "xy-client.d.ts"
    client.write_text(client.read_text().replace("resync(group: string)", "resync(group: number)"))
    (committed / "old.d.ts").write_text("export {};\n")
    (committed / "xy-outlet.d.ts").unlink()

    problems = typecheck.compare_declarations(fresh, committed)

    assert len(problems) == 3, problems
    assert problems[0] == "missing (not committed): ui-static/types/xy-outlet.d.ts"
    assert problems[1] == "stale extra file: ui-static/types/old.d.ts"
    assert problems[2].startswith("differs: ui-static/types/xy-client.d.ts\n")
    assert "resync(group: number)" in problems[2]
