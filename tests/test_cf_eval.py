import math

import numpy as np
import pytest
import torch

from hnl_ray.cf.data import CFData
from hnl_ray.cf.evaluate import Evaluator, ragged_rows
from hnl_ray.cf.metrics import all_metrics, ndcg, recall


def test_metrics_against_hand_computed_values():
    # user A: relevant {rank 1, rank 3} of 2 relevant; user B: relevant at rank 2, 3 relevant in total
    hits = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float32)
    n_rel = torch.tensor([2.0, 3.0])
    m = all_metrics(hits, n_rel, [2, 4])
    assert m["recall@2"].tolist() == pytest.approx([0.5, 1 / 3])
    assert m["recall@4"].tolist() == pytest.approx([1.0, 1 / 3])
    assert m["precision@4"].tolist() == pytest.approx([0.5, 0.25])
    assert m["hit@2"].tolist() == [1.0, 1.0]
    # NDCG@4 A: (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3))
    a = (1 + 1 / 2) / (1 + 1 / math.log2(3))
    # NDCG@4 B: (1/log2(3)) / (1 + 1/log2(3) + 1/log2(4))
    b = (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5)
    assert m["ndcg@4"].tolist() == pytest.approx([a, b])
    assert ndcg(torch.zeros(1, 3), torch.tensor([0.0]), 3).item() == 0.0
    assert recall(torch.ones(1, 2), torch.tensor([4.0]), 2).item() == 0.5


def test_ragged_rows():
    indptr = np.array([0, 2, 2, 5])
    indices = np.array([7, 8, 1, 2, 3])
    r, c = ragged_rows(indptr, indices, np.array([2, 0, 1]))
    assert r.tolist() == [0, 0, 0, 1, 1] and c.tolist() == [1, 2, 3, 7, 8]


def _tiny():
    # 3 users, 6 items. user 2 has no validation item.
    train = (np.array([0, 0, 1, 2]), np.array([0, 1, 2, 3]))
    valid = (np.array([0, 1]), np.array([2, 4]))
    test = (np.array([0, 1, 2, 2]), np.array([3, 5, 4, 3]))  # (2, 3) is a train item of user 2
    return CFData(n_users=3, n_items=6, train=train, valid=valid, test=test)


def test_masking_and_skipped_users():
    data = _tiny()
    ev_valid = Evaluator(data, "valid", [1, 2], batch_users=2)
    ev_test = Evaluator(data, "test", [1, 2], batch_users=2)
    assert ev_valid.skipped_users == 1 and ev_valid.users.tolist() == [0, 1]
    assert ev_test.masked_truth == 1  # user 2's test item 3 is already a train item
    # item scores: the best-scored items are exactly the masked ones
    user = torch.ones(3, 1)
    item = torch.tensor([[9.0], [8.0], [7.0], [1.0], [2.0], [3.0]])
    res = ev_valid.evaluate(user, item)
    # user 0 (train 0,1 masked): ranking 2,5 -> valid item 2 at rank 1
    # user 1 (train 2 masked): ranking 0,1 -> valid item 4 not in top 2
    assert res.per_user["hit@1"].tolist() == [1.0, 0.0]
    res = ev_test.evaluate(user, item)
    # at test, valid items are masked too: user 0 masks 0,1,2 -> ranking 5,4,3 -> test item 3 not in top 2
    # user 1 masks 2,4 -> ranking 0,1 ; user 2 masks 3 -> ranking 0,1,2,5,4
    assert res.per_user["recall@2"].tolist() == [0.0, 0.0, 0.0]
    assert res.users.tolist() == [0, 1, 2]


def test_k_larger_than_items_fails():
    with pytest.raises(ValueError, match="train.eval.ks: K=10 is larger than the number of items"):
        Evaluator(_tiny(), "valid", [10])
