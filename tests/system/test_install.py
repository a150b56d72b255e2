"""`ifmem init`: the config it writes tells a new user what a Claude shard needs."""

from __future__ import annotations

import re
from pathlib import Path

from ifmemd.config import default_config_path, load_config
from ifmemd.system import install


def test_init_config_has_a_commented_anthropic_example(tmp_path: Path) -> None:
    install.init(unit_dir=tmp_path / "units")
    text = default_config_path().read_text()
    key_file = default_config_path().parent / "anthropic.key"
    assert "# [anthropic]" in text
    assert re.search(r'^# model = "claude-[a-z0-9.-]+"', text, re.MULTILINE), text
    assert '# api_key_file = "~/.config/ifmem/anthropic.key"' in text
    assert load_config(None).shard_names == ("working",)  # all of it commented out

    # Uncommented as it says, with a shard that uses it, it is a valid config.
    uncommented = re.sub(r"^# (\[anthropic\]|model = |api_key_file = )", r"\1", text, flags=re.M)
    corpus = tmp_path / "notes"
    shard = f'\n[[shard]]\nname = "docs"\npaths = ["{corpus}/*.md"]\nbackend = "anthropic"\n'
    config_file = tmp_path / "ifmem.toml"
    config_file.write_text(uncommented + shard)
    docs = load_config(config_file).shard("docs")
    assert docs is not None
    assert docs.model == install.EXAMPLE_ANTHROPIC_MODEL
    assert docs.api_key_file is not None
    assert Path(docs.api_key_file).expanduser() == key_file
