"""8.1 bug: a tie (a hit exactly as fast as a miss) counts as a loss, not one half."""

from minikv.security.auc import balanced_accuracy, fit_threshold

TARGET = "8.1"
EXPECT = "a tie counted as a loss"


def score_attack(hits, misses, train_trials):
    test_h = [t for i, t in hits if i >= train_trials]
    test_m = [t for i, t in misses if i >= train_trials]
    cut = fit_threshold([t for i, t in hits if i < train_trials], [t for i, t in misses if i < train_trials])
    wins = sum(1.0 for h in test_h for m in test_m if h < m)
    return cut, balanced_accuracy(cut, test_h, test_m), wins / (len(test_h) * len(test_m))
