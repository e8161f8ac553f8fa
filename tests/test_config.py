import pytest

from latune.config import PRESETS, Config, ConfigError, describe_keys, from_flat, parse_number, resolve, to_flat


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
    ("eval.test_every", -1, "eval.test_every: must be >= 0 (0 = after the last epoch only)"),
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


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_resolve_fills_the_derived_settings_so_a_run_records_what_it_used(name):
    flat = to_flat(resolve(from_flat({"data.name": name})))
    eps = PRESETS[name]["attack.eps"]
    assert flat["attack.alpha"] == pytest.approx(eps / 4) and flat["la.perturbation_eps"] == pytest.approx(eps)
    assert flat["eval.eps"] == pytest.approx(eps) and flat["eval.alpha"] == pytest.approx(eps / 4)
    # what stays None means "not used" or "one per op", not a value filled later
    assert {k for k, v in flat.items() if v is None} <= {"data.data_dir", "model.small_stem", "la.m",
                                                        "eval.corruptions_dir", "eval.corruption_baseline"}


def test_the_evaluation_radius_is_the_presets_not_the_training_one():
    config = resolve(from_flat({"attack.eps": 0.0}))  # standard training is still attacked at digits' 0.1
    assert config.attack.eps == config.attack.alpha == config.la.perturbation_eps == 0.0
    assert config.eval.eps == PRESETS["digits"]["attack.eps"] and config.eval.alpha == pytest.approx(0.025)
    explicit = resolve(from_flat({"attack.eps": 0.2, "attack.alpha": 0.01, "eval.eps": 0.05,
                                  "la.perturbation_eps": 0.3}))
    assert (explicit.attack.alpha, explicit.eval.eps, explicit.eval.alpha, explicit.la.perturbation_eps) == (
        0.01, 0.05, pytest.approx(0.0125), 0.3)
    assert resolve(explicit) == explicit and from_flat(to_flat(explicit)) == explicit


def test_a_step_of_zero_only_without_an_attack():
    assert from_flat({"eval.eps": 0, "eval.alpha": 0}).eval.alpha == 0
    with pytest.raises(ConfigError, match=r"attack.alpha: must be in \(0, 1\]"):
        from_flat({"attack.eps": 0.1, "attack.alpha": 0})


@pytest.mark.parametrize("text, value", [("0.03", 0.03), ("8/255", 8 / 255), (" 1e-2 ", 0.01), ("4 / 255", 4 / 255)])
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "8/", "1/0", "1/2/3"])
def test_parse_number_refuses_what_is_no_number(text):
    with pytest.raises(ValueError):
        parse_number(text)


@pytest.mark.parametrize("overrides", [
    {"la.transform_set": "perturbations", "attack.eps": 0},  # la.perturbation_eps defaults to attack.eps
    {"la.transform_set": "perturbations", "la.perturbation_eps": 0},
])
def test_a_transformation_set_that_can_never_change_an_image_is_refused(overrides):
    with pytest.raises(ConfigError) as info:
        resolve(from_flat(overrides))
    assert str(info.value).startswith("la.transform_set: 'perturbations' would leave every image unchanged, "
                                      "because la.perturbation_eps is 0") and "\n" not in str(info.value)
    resolve(from_flat({**overrides, "la.delta": 0}))  # LA off: the set is not used
    resolve(from_flat({**overrides, "la.transform_set": "noise_blur"}))  # other ops still transform


def test_a_colour_only_set_is_refused_on_one_channel_data(monkeypatch):
    from latune import registry

    monkeypatch.setitem(registry.TRANSFORM_SETS, "colour", ("saturation",))
    with pytest.raises(ConfigError, match="la.transform_set: 'colour' would leave every image unchanged, because "
                                          "digits images have one channel"):
        from_flat({"la.transform_set": "colour"})
    assert from_flat({"la.transform_set": "colour", "data.name": "cifar10"}).la_ops == ("saturation",)
    assert from_flat({"la.transform_set": "photometric"}).la_ops[2] == "saturation"  # per image: z = -1


def test_label_layout_of_the_config():
    assert from_flat({"la.transform_set": "geometric"}).num_extra == 5
    assert from_flat({"la.transform_set": "geometric", "la.m": 2}).num_extra == 2
    assert from_flat({"la.delta": 0}).la_ops == () and from_flat({"la.delta": 0}).num_extra == 0


def test_augment_only_transforms_with_plain_labels():
    config = from_flat({"la.mode": "augment_only", "la.delta": 0, "la.transform_set": "geometric"})
    assert config.augment_only and not config.la_active
    assert config.la_ops == from_flat({"la.transform_set": "geometric"}).la_ops  # the transformations are applied
    assert config.num_extra == 0  # a K-logit head
    assert from_flat({"la.delta": 0}).la_ops == () and not from_flat({}).augment_only


@pytest.mark.parametrize("overrides, message", [
    ({"la.delta": 0.1}, "la.delta: must be 0 with la.mode=augment_only"),
    ({"la.delta": 0, "la.transform_set": "none"}, "la.transform_set: must be a transformation set"),
    ({"la.delta": 0, "la.p": 0}, "la.p: must be > 0 with la.mode=augment_only"),
    ({"la.delta": 0, "la.m": 2}, "la.m: must be none with la.mode=augment_only"),
    ({"la.delta": 0, "la.transform_set": "perturbations", "attack.eps": 0, "la.perturbation_eps": 0},
     "would leave every image unchanged"),
    ({"la.mode": "labels"}, "la.mode: unknown value 'labels'; allowed: la, augment_only"),
])
def test_augment_only_is_validated(overrides, message):
    with pytest.raises(ConfigError) as err:
        from_flat({"la.mode": "augment_only", **overrides})
    assert message in str(err.value) and "\n" not in str(err.value)
