"""8.1 bug: the threshold is on the wrong side: a probe slower than the cut is called a hit."""

from minikv.security.auc import roc_auc

TARGET = "8.1"
EXPECT = "the threshold on the wrong side"


def score_attack(hits, misses, train_trials):
    train_h = [t for i, t in hits if i < train_trials]
    train_m = [t for i, t in misses if i < train_trials]
    test_h = [t for i, t in hits if i >= train_trials]
    test_m = [t for i, t in misses if i >= train_trials]

    def acc(c, hs, ms):
        return (sum(t >= c for t in hs) / len(hs) + sum(t < c for t in ms) / len(ms)) / 2

    values = sorted(set(train_h + train_m))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
    cut = max(cuts, key=lambda c: (acc(c, train_h, train_m), -c))
    return cut, acc(cut, test_h, test_m), roc_auc([-t for t in test_h], [-t for t in test_m])
