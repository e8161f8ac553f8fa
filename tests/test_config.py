import pytest

from latune.config import PRESETS, Config, ConfigError, describe_keys, from_flat, resolve, to_flat


def test_defaults_round_trip_through_flat_keys():
    config = Config()
    assert from_flat(to_flat(config)) == config


def test_flat_keys_map_onto_nested_fields_and_strings_are_coerced():
    config = from_flat({"attack.eps": "8/255", "la.delta": "0.2", "attack.steps": "7", "optim.nesterov": "false",
                        "optim.milestones": "0.3,0.6", "la.m": "none", "seed": 3})
    assert config.attack.eps == pytest.approx(8 / 255)
    assert config.la.delta == 0.2 and config.attack.steps == 7 and config.seed == 3
    assert config.optim.nesterov is False and config.optim.milestones == (0.3, 0.6) and config.la.m is None
    assert to_flat(config)["attack.eps"] == pytest.approx(8 / 255)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_resolve_fills_every_none_from_the_preset(name):
    config = resolve(from_flat({"data.name": name}))
    for key, value in PRESETS[name].items():
        assert to_flat(config)[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_resolve_keeps_explicit_values():
    config = resolve(from_flat({"attack.eps": 0.0, "optim.epochs": 2}))
    assert config.attack.eps == 0.0 and config.optim.epochs == 2


@pytest.mark.parametrize("key, value, fragment", [
    ("attack.eps", -0.1, "attack.eps: must be in [0, 1]"),
    ("attack.eps", "abc", "attack.eps: expected"),
    ("la.delta", 1.0, "la.delta: must be in [0, 1)"),
    ("la.delta", -0.01, "la.delta: must be in [0, 1)"),
    ("la.m", 0, "la.m: must be in 1..9"),
    ("la.m", 10, "la.m: must be in 1..9"),
    ("attack.steps", -1, "attack.steps: must be >= 0"),
    ("eval.steps", -3, "eval.steps: must be >= 0"),
    ("optim.lr", 0, "optim.lr: must be > 0"),
    ("optim.lr", -1, "optim.lr: must be > 0"),
    ("data.name", "imagenet", "data.name: unknown value 'imagenet'; allowed: digits, mnist, cifar10"),
    ("model.arch", "vgg", "model.arch: unknown value 'vgg'; allowed: small_cnn, preact_resnet18"),
    ("la.transform_set", "colours", "la.transform_set: unknown set 'colours'; allowed: none, augmix"),
    ("optim.schedule", "step", "optim.schedule: unknown value 'step'; allowed: cosine"),
    ("attack.steps", 2.5, "attack.steps: expected an integer"),
    ("optim.nesterov", "maybe", "optim.nesterov: expected true or false"),
    ("la.p", 1.5, "la.p: must be in [0, 1]"),
    ("la.severity", 11, "la.severity: must be in 1..10"),
    ("device", "tpu", "device: must be one of auto, cpu, cuda"),
    ("eval.corruptions", "rain", "eval.corruptions: unknown 'rain'; allowed: none, all, noise, blur, weather, digital"),
    ("eval.corruptions", "fog,haze", "eval.corruptions: unknown 'haze'"),
    ("eval.corruption_severities", "0,3", "eval.corruption_severities: must be a non-empty list of severities in 1..5"),
    ("eval.corruption_every", -1, "eval.corruption_every: must be >= 0"),
    ("eval.corruptions_dir", "/data/CIFAR-10-C", "eval.corruptions_dir: must be none unless data.name is cifar10"),
])
def test_bad_values_raise_one_clear_line(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        from_flat({key: value})
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'attack.epz' \(did you mean 'attack.eps'\?\)"):
        from_flat({"attack.epz": 0.1})


def test_m_is_checked_against_the_size_of_the_chosen_set():
    assert from_flat({"la.transform_set": "geometric", "la.m": 5}).la.m == 5
    with pytest.raises(ConfigError, match="la.m: must be in 1..5 .*'geometric'"):
        from_flat({"la.transform_set": "geometric", "la.m": 6})


def test_la_active_only_with_positive_delta_and_a_set():
    assert from_flat({"la.delta": 0.1}).la_active
    assert not from_flat({"la.delta": 0.0}).la_active
    assert not from_flat({"la.delta": 0.1, "la.transform_set": "none"}).la_active


def test_every_key_is_documented():
    for key, _, comment in describe_keys():
        assert comment, f"{key} has no unit/meaning comment"
