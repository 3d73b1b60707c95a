"""Count likelihoods, the classifier head, KL warm-up and early stopping on synthetic counts."""

import numpy as np
import pandas as pd
import pytest
import torch

from src.app.core.data.labels import draw_visible, label_codes
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.nn import VAE, VAEConfig
from src.app.core.model.train_loop import EarlyStopping, kl_weight
from src.app.core.model_adapter import ModelAdapter
from src.app.errors import DataError
from tests.conftest import replace, small_config


def test_kl_weight_schedule():
    assert [kl_weight(e, warmup_epochs=4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(0, warmup_epochs=0) == 1.0
    assert kl_weight(0, warmup_epochs=2, final=0.5) == 0.25
    assert kl_weight(5, warmup_epochs=2, final=0.5) == 0.5


def test_early_stopping_tracks_best_and_stops():
    module = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    losses = [5.0, 4.0, 4.5, 4.2]
    stops = []
    for epoch, loss in enumerate(losses):
        with torch.no_grad():
            module.weight.fill_(epoch)
        stops.append(stopper.step(loss, epoch, module))
    assert stops == [False, False, False, True]
    assert stopper.best_epoch == 1
    assert torch.all(stopper.best_state["weight"] == 1)
    off = EarlyStopping(0)
    assert not off.step(1.0, 10, module)
    assert off.best_epoch == 10
    assert off.best_state is None  # nothing to restore: no copy


def visible_label_mask(labels, *, fraction, seed):
    """The classifier head's draw of visible labels."""
    return draw_visible(label_codes(labels)[0], fraction=fraction, seed=seed)


def test_visible_labels_are_stratified_and_seeded():
    labels = pd.Series(["a"] * 90 + ["b"] * 8 + ["rare"] * 2 + [None] * 5)
    mask = visible_label_mask(labels, fraction=0.1, seed=0)
    assert mask[:90].sum() == 9
    assert mask[90:98].sum() == 1
    assert mask[98:100].sum() == 1  # at least one per class
    assert not mask[100:].any()
    assert (mask == visible_label_mask(labels, fraction=0.1, seed=0)).all()
    assert (mask != visible_label_mask(labels, fraction=0.1, seed=1)).any()


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_count_likelihoods_train_and_lower_the_loss(tmp_path, runtime, pre_adata, likelihood):
    cfg = small_config(tmp_path, model={"likelihood": likelihood})
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    batch = next(data.iter_all_batches())
    assert torch.equal(batch.x, torch.log1p(batch.target))  # encoder sees log1p counts
    assert torch.allclose(batch.library.exp().squeeze(1), batch.target.sum(1))
    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=6))
    history = model.fit(data)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert np.isfinite(model.predict(data.iter_all_batches())).all()


def test_count_likelihood_refuses_non_integer_counts(tmp_path, runtime, pre_adata):
    bad = pre_adata.copy()
    bad.layers["counts"] = bad.layers["counts"].toarray() + 0.5
    cfg = small_config(tmp_path, model={"likelihood": "nb"})
    with pytest.raises(DataError, match="non-negative integer counts"):
        DataAdapter(cfg, runtime=runtime, adata=bad)
    del bad.layers["counts"]
    with pytest.raises(DataError, match="layers"):
        DataAdapter(cfg, runtime=runtime, adata=bad)


def test_classifier_head_predicts_every_cell(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, annotation={"label_fraction": 0.2})
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    labels = pre_adata.obs["cell_type_coarse"]
    assert data.label_categories == sorted(labels.dropna().unique())
    assert data.dataset_info()["n_labels_visible"] < labels.notna().sum()
    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=30, lr=0.01))
    model.fit(data)
    predicted, proba = model.predict_labels(data.iter_all_batches())
    assert proba.shape == (pre_adata.n_obs, len(data.label_categories))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    hidden = labels.notna().to_numpy() & ~data.label_visible
    accuracy = (predicted[hidden] == labels.to_numpy()[hidden]).mean()
    assert accuracy > 0.8  # well-separated synthetic types


def test_pseudo_labels_reach_the_training_batches_only(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, annotation={"label_fraction": 0.1})
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    hidden = data.visible_codes < 0
    codes = np.where(hidden, 1, data.visible_codes)
    data.set_pseudo_labels(codes, np.where(hidden, 0.25, 0.0))
    train = next(data.iter_train_batches())
    assert (train.labels >= 0).all()
    assert set(train.label_weights.unique().tolist()) <= {0.25, 1.0}
    assert (train.label_weights[train.labels != 1] == 1.0).all()  # visible labels kept
    val = next(data.iter_val_batches())
    assert ((val.labels >= 0).float() == val.label_weights).all()  # visible labels only


def test_pseudo_label_schedule_and_history(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, annotation={"label_fraction": 0.05, "pseudo_label_every": 2})
    assert list(cfg.annotation.pseudo_label_epochs(8)) == [4, 6]
    assert list(cfg.annotation.pseudo_label_epochs(1)) == []  # never the untrained latent
    off = replace(cfg.annotation, pseudo_labels=False)
    assert list(off.pseudo_label_epochs(8)) == []
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    history = ModelAdapter(cfg, runtime=replace(runtime, epochs=6, lr=0.01)).fit(data)
    assert "pseudo_labelled" not in history[2]
    n_hidden = int((data.visible_codes < 0).sum())
    assert 0 < history[3]["pseudo_labelled"] <= n_hidden
    assert 0 < history[3]["pseudo_certainty"] <= 1


def test_pseudo_labels_lift_the_head_with_few_labels(tmp_path, runtime, pre_adata):
    """One or two labels per class: the head trained on label-spread pseudo-labels as well
    annotates the hidden cells at least as well as the head trained on the labels alone."""
    labels = pre_adata.obs["cell_type_coarse"]
    hidden_truth = labels.to_numpy()
    scores = {}
    for on in (False, True):
        cfg = small_config(tmp_path, annotation={"label_fraction": 0.01, "pseudo_labels": on})
        data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
        model = ModelAdapter(cfg, runtime=replace(runtime, epochs=20, lr=0.01))
        model.fit(data)
        predicted, _ = model.predict_labels(data.iter_all_batches())
        hidden = labels.notna().to_numpy() & ~data.label_visible
        scores[on] = (predicted[hidden] == hidden_truth[hidden]).mean()
    assert scores[True] >= scores[False]
    assert scores[True] > 0.8


def test_diverging_training_stops_with_a_message(tmp_path, runtime, pre_adata):
    from src.app.errors import TrainingError

    cfg = small_config(tmp_path)
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    model = ModelAdapter(cfg, runtime=replace(runtime, lr=1e30))
    with pytest.raises(TrainingError, match=r"diverged.*epoch 1.*train\.lr"):
        model.fit(data)


def test_head_survives_save_and_load(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path)
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(data)
    model.save(tmp_path / "m")
    loaded = ModelAdapter(cfg, runtime=runtime).load(tmp_path / "m")
    assert loaded.label_categories == model.label_categories
    a = model.predict_labels(data.iter_all_batches())[1]
    b = loaded.predict_labels(data.iter_all_batches())[1]
    np.testing.assert_array_equal(a, b)


def test_no_head_without_label_key(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, annotation={"label_key": None})
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(DataAdapter(cfg, runtime=runtime, adata=pre_adata))
    with pytest.raises(RuntimeError, match="no classifier head"):
        model.predict_labels(np.zeros((2, pre_adata.n_vars), dtype=np.float32))
    with pytest.raises(DataError, match=r"annotation\.label_key"):
        DataAdapter(
            small_config(tmp_path, annotation={"label_key": "nope"}),
            runtime=runtime,
            adata=pre_adata,
        )


def test_early_stopping_restores_best_weights(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, train={"early_stopping_patience": 1, "lr": 0.05})
    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=30, lr=0.05))
    history = model.fit(DataAdapter(cfg, runtime=runtime, adata=pre_adata))
    val = [row["val_loss"] for row in history]
    assert len(history) < 30  # stopped early
    assert val.index(min(val)) == len(val) - 2  # patience 1: one epoch past the best


def test_gradients_finite_on_extreme_counts():
    cfg = VAEConfig(
        n_genes=5, latent_dim=2, hidden_dims=(8,), dropout=0.0, likelihood="zinb", n_labels=2
    )
    module = VAE(cfg)
    target = torch.tensor([[0.0, 1e5, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    terms = module.loss(
        torch.log1p(target), target, library=target.sum(1, keepdim=True).log(), labels=torch.tensor([1, 0]),
        label_weights=torch.tensor([1.0, 1e-6]), classification_weight=10.0,
    )  # fmt: skip
    terms.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_adam_takes_the_textbook_steps():
    """The written-out Adam: bias-corrected moments, L2 weight decay added to the gradient, eps
    outside the square root (torch.optim.Adam's update), checked against the formulas in NumPy."""
    from src.app.core.model.optim import Adam

    rng = np.random.default_rng(0)
    start, x = rng.normal(size=(3, 5)), rng.normal(size=(16, 5))
    weight = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = Adam([weight], lr=1e-2, weight_decay=1e-3)
    w, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for step in range(1, 21):
        opt.zero_grad()
        (torch.tensor(x) @ weight.T).pow(2).sum().backward()
        opt.step()
        grad = 2 * (x @ w.T).T @ x + 1e-3 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w = w - 1e-2 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    np.testing.assert_allclose(weight.detach().numpy(), w, rtol=1e-9, atol=1e-12)
