"""Small synthetic CF data for tests."""

import numpy as np

from hnl_ray.cf.data import CFData


def random_data(n_users=40, n_items=60, per_user=8, seed=0) -> CFData:
    rng = np.random.default_rng(seed)
    us, its = [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user + 2, replace=False)
        us.append(np.full(per_user + 2, u))
        its.append(items)
    u = np.concatenate(us)
    i = np.concatenate(its)
    label = np.tile(np.r_[np.zeros(per_user), 1, 2], n_users)
    pick = lambda k: (u[label == k], i[label == k])  # noqa: E731
    return CFData(n_users=n_users, n_items=n_items, train=pick(0), valid=pick(1), test=pick(2))
