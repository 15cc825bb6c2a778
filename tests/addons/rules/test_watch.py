"""When the rules file counts as changed: a change is reported once it has settled, until a load is attempted."""

from __future__ import annotations

import os
from pathlib import Path

from addons.rules.model import credential_files, load_rules
from addons.rules.watch import FileWatch, stat_of


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))  # distinct times, however coarse the file system's clock


def test_a_change_is_reported_once_settled_and_until_a_load_is_attempted(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    _write(rules, "a", 1_000_000_000)
    watch = FileWatch([rules])
    assert not watch.tick()
    _write(rules, "ab", 2_000_000_000)
    assert not watch.tick()  # changed since the previous tick: maybe half written
    _write(rules, "abc", 3_000_000_000)
    assert not watch.tick()
    assert watch.tick()  # the same as at the previous tick: settled
    assert watch.tick()  # still to be loaded
    watch.loaded(watch.stats())
    assert not watch.tick()


def test_a_file_written_while_it_was_loaded_is_seen_at_the_next_ticks(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    _write(rules, "a", 1_000_000_000)
    watch = FileWatch([rules])
    _write(rules, "b!", 2_000_000_000)
    watch.tick()
    before = watch.stats()
    assert watch.tick()
    _write(rules, "c!!", 3_000_000_000)  # after the stats were taken, before or while it was read
    watch.loaded(before)
    watch.tick()
    assert watch.tick()


def test_credential_files_are_watched_and_told_apart_from_the_rules_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    secret = tmp_path / "keys" / "openai"
    _write(secret, "sk-one", 1_000_000_000)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("upstreams:\n  - name: openai\n    host: api.openai.com\n"
                          "    credential: {header: Authorization, file: keys/openai}\n")
    rules = load_rules(rules_file)
    assert credential_files(rules) == [secret]
    watch = FileWatch([rules_file, *credential_files(rules)])
    _write(secret, "sk-two", 2_000_000_000)
    watch.tick()
    assert watch.tick() and not watch.only_rules_file_changed(watch.stats())
    watch.loaded(watch.stats())
    _write(rules_file, rules_file.read_text() + "\n", 3_000_000_000)
    assert watch.only_rules_file_changed(watch.stats())


def test_a_missing_file_is_a_state_of_its_own(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    assert stat_of(rules) is None
    watch = FileWatch([rules])
    rules.write_text("x")
    watch.tick()
    assert watch.tick()
