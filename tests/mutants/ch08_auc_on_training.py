"""8.1 bug: the AUC is computed on the training trials (the ones the cut was fit on), not the test trials."""

from minikv.security.auc import balanced_accuracy, fit_threshold

TARGET = "8.1"
EXPECT = "an AUC computed on the training trials"


def score_attack(hits, misses, train_trials):
    train_h = [t for i, t in hits if i < train_trials]
    train_m = [t for i, t in misses if i < train_trials]
    test_h = [t for i, t in hits if i >= train_trials]
    test_m = [t for i, t in misses if i >= train_trials]
    cut = fit_threshold(train_h, train_m)
    wins = sum(1.0 if h < m else 0.5 if h == m else 0.0 for h in train_h for m in train_m)
    return cut, balanced_accuracy(cut, test_h, test_m), wins / (len(train_h) * len(train_m))
