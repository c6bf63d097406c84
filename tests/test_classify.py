import numpy as np

from operators.models.classify import Head, fit_head


def test_fit_separates_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (300, 16)), rng.normal(1, 1, (100, 16))])
    y = ["non_music"] * 300 + ["music"] * 100
    head = fit_head(x, y, ["non_music", "music"])
    acc = np.mean((head.predict_proba(x)[:, 1] > 0.5) == np.array([c == "music" for c in y]))
    assert acc > 0.97
    head.save(tmp_path / "h.json")
    again = Head.load(tmp_path / "h.json")
    np.testing.assert_allclose(again.predict_proba(x), head.predict_proba(x), atol=1e-4)


def test_balanced_weights_do_not_favour_the_majority():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (900, 4)), rng.normal(0.5, 1, (100, 4))])
    y = ["a"] * 900 + ["b"] * 100
    head = fit_head(x, y)
    assert 0.3 < np.mean(head.predict_proba(x)[:, 1] > 0.5) < 0.7
