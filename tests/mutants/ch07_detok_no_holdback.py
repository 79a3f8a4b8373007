"""7.1 bug: nothing is held back, so the first characters of a stop string go out before it is complete."""

from minikv.grade import learner_module

TARGET = "7.1"
EXPECT = "must wait while they could begin a stop string"

_solution = learner_module("ch07_serving", "solutions")


class StreamDetokenizer(_solution.StreamDetokenizer):
    def __init__(self, tokenizer, stop=(), include_stop_str_in_output=False):
        super().__init__(tokenizer, stop, include_stop_str_in_output)
        self.holdback = 0
