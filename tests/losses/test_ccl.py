"""CCL's losses and composition head (losses/ccl.py, models/ccl.py) against direct loops and formulas."""

import math

import pytest
import torch

from losses.ccl import ccl_jsd, multi_class_nce, same_class, symmetric_nce
from models.ccl import CompositionHead


def _nce_loop(f1, f2, labels, t):
    """Row by row, pair by pair, with Python floats: the reference's formula."""
    total = 0.0
    for i in range(len(f1)):
        cos = [float(torch.dot(f1[i] / f1[i].norm(), f2[j] / f2[j].norm())) for j in range(len(f2))]
        z = sum(math.exp(c / t) for c in cos)
        p = [math.exp(c / t) / z for c in cos]
        pos = [j for j in range(len(f2)) if labels[i] == labels[j]]
        neg = [j for j in range(len(f2)) if labels[i] != labels[j]]
        term = sum(-math.log(p[j] + 1e-10) for j in pos) / len(pos)
        if neg:
            term += sum(-math.log(1 - p[j] + 1e-10) for j in neg) / len(neg)
        total += term
    return total / len(f1)


def test_nce_equals_a_direct_loop_with_several_positives_per_row():
    gen = torch.Generator().manual_seed(0)
    f1 = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    f2 = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])  # class 0 three times, class 1 twice
    got = multi_class_nce(f1, f2, same_class(labels), temperature=0.5)
    assert got.item() == pytest.approx(_nce_loop(f1, f2, labels.tolist(), 0.5), rel=1e-10)


def test_a_row_without_negatives_has_no_negative_term_and_no_nan():
    f = torch.randn(3, 4, dtype=torch.float64)
    labels = torch.tensor([7, 7, 7])  # every column is a positive
    got = multi_class_nce(f, f.flip(0), same_class(labels), temperature=0.1)
    assert torch.isfinite(got) and got.item() == pytest.approx(_nce_loop(f, f.flip(0), [7, 7, 7], 0.1), rel=1e-10)
    # all positives in one softmax: the positive term is -mean log p over a row that sums to 1, at least log 3
    assert got.item() >= math.log(3) - 1e-9


def test_nce_gradients_match_the_direct_formula():
    gen = torch.Generator().manual_seed(1)
    f1 = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2])

    def direct(a):
        a_n, b_n = a / a.norm(dim=1, keepdim=True), f2 / f2.norm(dim=1, keepdim=True)
        out = 0
        for i in range(5):
            p = torch.softmax((a_n[i] @ b_n.T) / 0.5, dim=0)
            pos, neg = labels == labels[i], labels != labels[i]
            out = out + (-torch.log(p[pos] + 1e-10)).mean() + (-torch.log(1 - p[neg] + 1e-10)).mean()
        return out / 5

    expected = torch.autograd.grad(direct(f1), f1)[0]
    got = torch.autograd.grad(multi_class_nce(f1, f2, same_class(labels), 0.5), f1)[0]
    torch.testing.assert_close(got, expected)


def test_symmetric_nce_is_both_directions():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    same = same_class(torch.tensor([0, 1, 0, 1]))
    assert symmetric_nce(a, b, same, 0.1).item() == pytest.approx(
        (multi_class_nce(a, b, same, 0.1) + multi_class_nce(b, a, same, 0.1)).item())


def test_same_class_for_multi_label_data_is_any_shared_label():
    hot = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(same_class(hot), expected)  # a clip without labels is only its own positive
    with pytest.raises(ValueError, match="labels must be"):
        same_class(torch.zeros(2, 2, 2))


def test_jsd_is_the_references_symmetric_kl():
    p_logits = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    q_logits = torch.tensor([[0.0, 0.5, 0.0], [2.0, -1.0, 0.0]], dtype=torch.float64)
    p, q = torch.softmax(p_logits, 1), torch.softmax(q_logits, 1)
    kl = lambda a, b: sum(float(a[c]) * math.log(float(a[c]) / float(b[c]) + 1e-10) for c in range(3))  # noqa: E731
    expected = 0.5 * sum(kl(p[i], q[i]) + kl(q[i], p[i]) for i in range(2)) / 2
    assert ccl_jsd(p_logits, q_logits, weight=0.5).item() == pytest.approx(expected, rel=1e-10)
    assert ccl_jsd(p_logits, p_logits).item() == pytest.approx(0.0, abs=1e-9)


def test_composition_head_adds_a_residual_to_the_frozen_teacher():
    torch.manual_seed(0)
    head = CompositionHead(dim=8, classes=5)
    teacher = torch.randn(4, 8, requires_grad=True)
    student = torch.randn(4, 8, requires_grad=True)
    logits, feature = head(teacher.detach(), student)
    assert logits.shape == (4, 5) and feature.shape == (4, 8)
    pair = torch.cat([torch.nn.functional.normalize(teacher, dim=1), torch.nn.functional.normalize(student, dim=1)], 1)
    torch.testing.assert_close(feature, teacher + head.mlp(pair))
    (logits.sum() + feature.sum()).backward()
    assert teacher.grad is None and student.grad is not None and head.mlp.weight.grad is not None
    with pytest.raises(ValueError, match="differ in shape"):
        head(torch.zeros(2, 8), torch.zeros(2, 4))


def test_objective_routes_gradients_as_the_references_two_optimisers():
    """The reference backs total_a (head) up, zeroes the student's gradients, then backs total_v
    (student) up: the student keeps total_v's gradients, the head both. One backward of
    ccl_objective's sum gives the same gradients (two teachers, several positives per class)."""
    from losses.ccl import ccl_objective
    torch.manual_seed(0)
    encoder, classifier = torch.nn.Linear(6, 4).double(), torch.nn.Linear(4, 3).double()
    heads = {"image": CompositionHead(4, 3).double(), "text": CompositionHead(4, 3).double()}
    x = torch.randn(8, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    teachers = {"image": torch.randn(8, 4, dtype=torch.float64), "text": torch.randn(8, 4, dtype=torch.float64)}
    temps = {"image": 0.1, "text": 0.5}
    same = same_class(labels)
    params = [*encoder.parameters(), *classifier.parameters(), *(p for h in heads.values() for p in h.parameters())]

    # the reference's order of operations
    student = encoder(x)
    logits_s = classifier(student)
    ce = torch.nn.functional.cross_entropy
    total_v, total_a = ce(logits_s, labels), 0
    for name in ("image", "text"):
        logits_c, composed = heads[name](teachers[name], student)
        jsd = ccl_jsd(logits_s, logits_c, 0.5)
        total_v = total_v + symmetric_nce(student, composed, same, temps[name]) + \
            symmetric_nce(student, teachers[name], same, temps[name]) + jsd
        total_a = total_a + ce(logits_c, labels) + symmetric_nce(student, composed, same, temps[name]) + \
            symmetric_nce(composed, teachers[name], same, temps[name]) + jsd
    for p in params:
        p.grad = None
    total_a.backward(retain_graph=True)
    for p in (*encoder.parameters(), *classifier.parameters()):
        p.grad = None  # optimizer.zero_grad() of the student's optimiser
    total_v.backward()
    reference = [p.grad.clone() for p in params]

    for p in params:
        p.grad = None
    student = encoder(x)
    loss, parts = ccl_objective(student, classifier(student), teachers, heads, labels, temps)
    loss.backward()
    for ref, p in zip(reference, params):
        torch.testing.assert_close(p.grad, ref)
    assert {"ce", "nce_composed_image", "nce_teacher_text", "jsd_image", "head_text"} <= set(parts)


def test_objective_on_multi_label_data_uses_binary_cross_entropy():
    from losses.ccl import ccl_objective
    torch.manual_seed(0)
    student = torch.randn(4, 4, requires_grad=True)
    logits = torch.randn(4, 3, requires_grad=True)
    hot = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    loss, parts = ccl_objective(student, logits, {}, {}, hot, {})
    assert parts["ce"].item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, hot.float()).item())
    assert loss.item() == pytest.approx(parts["ce"].item())  # no teacher: the supervised baseline
