import dataclasses
from typing import List, Optional

import pytest
from omegaconf import MISSING

from vcmr.config import CONFIG_DIR, ConfigError, load_config, save_config


@dataclasses.dataclass
class Inner:
    lr: float = MISSING
    name: str = MISSING


@dataclasses.dataclass
class Schema:
    seed: int = MISSING
    path: Optional[str] = MISSING
    sizes: List[int] = MISSING
    optim: Inner = MISSING


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_base_include_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "seed: 1\npath: null\nsizes: [1, 2]\noptim: {lr: 0.1, name: adam}\n")
    main = write(tmp_path, "main.yaml", "_base_: [base.yaml]\nseed: 7\n")
    cfg = load_config(main, ["optim.lr=0.5", "sizes=[3,4,5]"], schema=Schema)
    assert cfg.seed == 7 and cfg.optim.lr == 0.5 and list(cfg.sizes) == [3, 4, 5] and cfg.optim.name == "adam"


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: null\nsizes: []\noptim: {lr: 0.1, name: adam}\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        load_config(main, ["optim.lrr=3"], schema=Schema)


def test_unknown_key_in_yaml(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: null\nsizes: []\noptim: {lr: 0.1, name: adam, beta: 2}\n")
    with pytest.raises(ConfigError, match=r"optim\.beta"):
        load_config(main, schema=Schema)


def test_wrong_type_names_the_key(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: null\nsizes: []\noptim: {lr: 0.1, name: adam}\n")
    with pytest.raises(ConfigError, match=r"seed"):
        load_config(main, ["seed=abc"], schema=Schema)


def test_missing_required_key(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: null\nsizes: []\noptim: {name: adam}\n")
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(main, schema=Schema)


def test_bad_override_syntax(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: null\nsizes: []\noptim: {lr: 1, name: adam}\n")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(main, ["seed"], schema=Schema)


def test_save_roundtrip(tmp_path):
    main = write(tmp_path, "m.yaml", "seed: 1\npath: x\nsizes: [1]\noptim: {lr: 1.5, name: adam}\n")
    cfg = load_config(main, schema=Schema)
    out = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(out, schema=Schema)
    assert again == cfg


def test_shipped_stage1_configs_validate():
    from vcmr.trainers.music import MusicPretrainConfig

    demo = load_config(CONFIG_DIR / "mus_pretrain_demo.yaml", schema=MusicPretrainConfig)
    assert demo.data.root == "demo"
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config(CONFIG_DIR / "mus_pretrain.yaml", schema=MusicPretrainConfig)
    full = load_config(CONFIG_DIR / "mus_pretrain.yaml", ["data.root=/x"], schema=MusicPretrainConfig)
    assert full.model.audio_encoder.args.input_length == 98415
