"The committed model cards: every figure in them is a value of the committed metrics.json, or the difference or ratio they say."
import json
from pathlib import Path

import numpy as np
import pytest

from fabguard.explain import card_markdown, confusion_pairs, fp32_source, model_card

ROOT = Path(__file__).resolve().parents[1]
REPORTS = sorted(p.parent for p in (ROOT / "reports").glob("*/*/MODEL_CARD.md"))


def test_the_readme_links_a_committed_card():
    assert ROOT / "reports" / "synthetic" / "quick" in REPORTS
    assert "(reports/synthetic/quick/MODEL_CARD.md)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("rep", REPORTS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_card_figures_are_metrics(rep):
    m = json.loads((rep / "metrics.json").read_text())
    assert (rep / "MODEL_CARD.md").read_text() == card_markdown(model_card(m, "student_int8")), "MODEL_CARD.md is not the card of metrics.json"
    for v in m["model_files"]:  # every ONNX variant that has a card
        card, mod = model_card(m, v), m["models"][v]
        p = card["performance"]
        assert p["per_class"] == mod["per_class"] and all(k in c for c in p["per_class"].values() for k in ("precision_ci95", "recall_ci95", "f1_ci95")), v
        assert [p[k] for k in ("accuracy", "accuracy_ci95", "macro_f1", "ece", "n")] == [*(mod[k] for k in ("accuracy", "accuracy_ci95", "macro_f1", "ece")),
                                                                                           m["data"]["split_sizes"]["test"]], v
        assert card["latency"]["latency_ms"] == mod["latency_ms"] and card["latency"]["throughput_ips"] == mod["throughput_ips"], v
        assert card["latency"]["env"] == m["env"] and card["latency"]["runs"] == m["bench"]["runs"], v
        assert [card["model"][k] for k in ("sha256", "file_mb", "params", "flops")] == [mod[k] for k in ("sha256", "file_mb", "params", "flops")], v
        assert card["data"]["good_class"] == m["data"]["good_class"] and card["data"]["split_sizes"] == m["data"]["split_sizes"], v
        cm = np.array(mod["confusion"]); classes = list(mod["per_class"])
        assert card["confusions"] == confusion_pairs(cm, classes)[:len(card["confusions"])] and sum(c["count"] for c in card["confusions"]) <= cm.sum() - np.trace(cm)
        g = classes.index(m["data"]["good_class"])
        assert card["screening"]["missed"] == cm[:, g].sum() - cm[g, g] and card["screening"]["false_alarms"] == cm[g].sum() - cm[g, g], v
    i8, a, b = model_card(m, "student_int8")["int8"], m["models"][fp32_source(m)], m["models"]["student_int8"]
    assert [i8[f"{k}_delta"] for k in ("accuracy", "macro_f1", "ece")] == [b[k] - a[k] for k in ("accuracy", "macro_f1", "ece")]
    assert i8["size_ratio"] == a["file_mb"] / b["file_mb"] and i8["speedup_b1_t1"] == a["latency_ms"]["b1_t1"]["p50"] / b["latency_ms"]["b1_t1"]["p50"]
    assert i8["disagreements"]["n"] == m["gallery"]["disagreement"]["n"]
