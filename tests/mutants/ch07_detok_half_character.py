"""7.1 bug: text goes out as soon as it grows, even when it ends in half a multi-byte character (U+FFFD)."""

from minikv.grade import learner_module

TARGET = "7.1"
EXPECT = "half a character (U+FFFD) went out"

_solution = learner_module("ch07_serving", "solutions")


class StreamDetokenizer(_solution.StreamDetokenizer):
    def push(self, token_ids):
        for token in token_ids:
            if self.stopped:
                break
            self.ids.append(int(token))
            full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if full != self.text:
                self._grow(full)
        return self.stopped
