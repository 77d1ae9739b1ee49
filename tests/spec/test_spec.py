"""Study specs and run configs: every shipped spec loads, and bad specs name the problem."""

from __future__ import annotations

import pytest

from tuner.spec import Choices, Fixed, Range, RunConfig, SpecError, StudySpec, load_spec, shipped_specs


@pytest.mark.parametrize("name", sorted(shipped_specs()))
def test_every_shipped_spec_loads_and_round_trips(name):
    spec = load_spec(name)
    assert StudySpec.from_dict(spec.to_dict()) == spec


def test_default_spec_file_is_the_embedded_default():
    assert "fashion-mnist" in shipped_specs()
    assert load_spec("fashion-mnist") == StudySpec() == load_spec(None)


def test_default_study_searches_the_four_core_hyperparameters():
    search = StudySpec().search
    assert set(search["optimizer"].values) >= {"sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"}
    assert search["lr"] == Range(1e-4, 0.1, log=True)
    assert isinstance(search["batch_size"], Choices)
    assert search["scheduler"] == Fixed("onecycle-gamma") and search["gamma"] == Range(0.3, 0.9)
    assert search["model.width"] == Choices((16, 24, 32))  # bncnn's width


def test_another_model_leaves_the_default_studys_model_arguments_behind():
    assert "model.width" not in StudySpec().replace(model="mlp").search  # 16 units would be no MLP
    assert "model.width" not in StudySpec().replace(model="torchvision:resnet18").search
    assert StudySpec().replace(model="bncnn").search["model.width"] == Choices((16, 24, 32))


def test_search_entries_read_as_fixed_choices_or_ranges():
    spec = StudySpec.from_dict({"search": {"optimizer": "adam", "batch_size": [32, 64],
                                           "lr": {"low": 1e-3, "high": 1e-1, "log": True}}})
    assert spec.search == {"optimizer": Fixed("adam"), "batch_size": Choices((32, 64)),
                           "lr": Range(1e-3, 1e-1, log=True)}


def test_toml_spec(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "t"\nepochs = 2\nsampler = "random"\n[search]\noptimizer = ["adam", "sgd"]\n'
                    'lr = {low = 0.001, high = 0.1, log = true}\n')
    spec = load_spec(path)
    assert (spec.name, spec.epochs, spec.sampler) == ("t", 2, "random")
    assert spec.search["optimizer"] == Choices(("adam", "sgd"))


@pytest.mark.parametrize("raw, message", [
    ({"search": {"lr": {"low": 0.1, "high": 0.001}}}, "search.lr: low (0.1) is greater than high (0.001): swap them"),
    ({"search": {"optimizer": ["adam", "lbfgs"]}}, "unknown optimizer 'lbfgs': choose one of sgd, adam"),
    ({"search": {"learning_rate": 0.1}}, "unknown hyperparameter 'learning_rate' in search"),
    ({"search": {"batch_size": []}}, "search.batch_size is an empty list"),
    ({"search": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "lr must be > 0, got 0"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"sampler": "bayes"}, "unknown sampler 'bayes': choose one of tpe, random, cmaes, gp, qmc"),
    ({"pruner": "early"}, "unknown pruner 'early'"),
    ({"dataset": ""}, "dataset must be fashion-mnist, mnist, kmnist, cifar10, fashion-mnist-sample or the path of a "
                      "folder"),
    ({"validation": 1.5}, "validation must be a fraction between 0 and 1"),
    ({"metric": "accuracy", "direction": "minimize"}, "direction 'minimize' contradicts metric 'accuracy'"),
    ({"epoch": 3}, "unknown field(s) epoch in spec"),
    ({"model": "bncnn", "search": {"model.act": "relu"}}, "search.model.act: model bncnn takes model.width and "
                                                          "model.depth, not model.act"),
    ({"model": "bncnn", "search": {"model.width": {"low": 8, "high": 64.5}}},
     "search.model.width: model.width of bncnn must be a whole number >= 1, got 64.5"),
    ({"search": {"scheduler": "cosine", "warmup": 0.7}}, "warmup must be <= 0.5, got 0.7"),
    ({"model": "resnet18"}, "unknown model 'resnet18': use mlp, cnn, convnet, bncnn, rescnn, torchvision:NAME"),
    ({"model": "torchvision:"}, "model 'torchvision:' names no torchvision model"),
    ({"search": {"model.2x": [1, 2]}}, "search.model.2x: '2x' is not a keyword argument name"),
    ({"search": {"model.width": {"low": "a", "high": "b"}}}, "search.model.width: a range needs numbers"),
    ({"search": {"model.layers": [[1, 2]]}}, "model.layers must be a number, a string"),
    ({"search": {"mixup": {"low": 0, "high": 2}}}, "mixup must be <= 1, got 2"),
    ({"search": {"trivial_augment": ["yes"]}}, "trivial_augment must be true or false, got 'yes'"),
    ({"search": {"trivial_augment": {"low": 0, "high": 1}}}, "search.trivial_augment takes a value or a list"),
])
def test_bad_specs_say_what_is_wrong(raw, message):
    with pytest.raises(SpecError) as error:
        StudySpec.from_dict(raw)
    assert message in str(error.value)


def test_unparsable_and_missing_spec_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: {lr: [0.1\n")
    with pytest.raises(SpecError, match=r"cannot parse .*broken.yaml"):
        load_spec(broken)
    with pytest.raises(SpecError, match="no such spec file: nowhere.yaml"):
        load_spec("nowhere.yaml")


def test_the_batch_augmentations_are_searched_and_run_config_fields():
    spec = StudySpec.from_dict({"search": {"trivial_augment": [False, True], "mixup": {"low": 0, "high": 0.4},
                                           "cutmix": 1.0}})
    assert spec.search["trivial_augment"] == Choices((False, True)) and spec.search["mixup"] == Range(0, 0.4)
    config = RunConfig(trivial_augment=True, mixup=0.2, cutmix=1.0)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert (RunConfig().trivial_augment, RunConfig().mixup, RunConfig().cutmix) == (False, 0.0, 0.0)
    with pytest.raises(SpecError, match=r"^cutmix must be >= 0, got -0.5$"):
        RunConfig(cutmix=-0.5)


def test_run_config_rejects_hand_edited_values():
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    with pytest.raises(SpecError, match="unknown run config field"):
        RunConfig.from_dict({**RunConfig().to_dict(), "learning_rate": 0.1})
    with pytest.raises(SpecError, match="batch_size must be an integer"):
        RunConfig.from_dict({**RunConfig().to_dict(), "batch_size": "big"})
    with pytest.raises(SpecError, match="nesterov needs optimizer sgd"):
        RunConfig(optimizer="adam", nesterov=True)


def test_spec_refuses_a_sampler_seed_and_nesterov_without_momentum():
    with pytest.raises(SpecError, match="set the seed with `tune start --seed N` instead"):
        StudySpec.from_dict({"sampler": {"name": "tpe", "seed": 3}})
    with pytest.raises(SpecError, match="search.nesterov needs momentum"):
        StudySpec.from_dict({"search": {"optimizer": "sgd", "nesterov": True}})


def test_a_checkpoint_saved_before_new_fields_existed_still_belongs_to_its_run():
    config = RunConfig(epochs=3)
    older = {k: v for k, v in config.to_dict().items() if k not in ("trivial_augment", "mixup", "cutmix")}
    assert config.same_as(older)  # an upgrade mid-study goes on from the checkpoint
    assert not config.replace(mixup=0.2).same_as(older)
    assert not config.same_as({"epochs": "three"}) and not config.same_as(None)
