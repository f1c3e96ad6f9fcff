"""The names of the 8 fixture predictors of the Cog 0.23.1 conformance kit
(../shared/conformance/cog-0.23.1/predictors), for the tests that run each of them."""

NAMES = ["hello", "types_zoo", "path_output", "list_path_output", "concat_iterator", "model_output", "slow", "predict_raises"]
