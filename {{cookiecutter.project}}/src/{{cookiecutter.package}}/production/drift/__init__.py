"""`drift`: has production moved away from what the golden set describes?

    drift --reference data/processed/eval_set.jsonl [--reference-results eval/results.jsonl]
          --current captures/ [--probe] --out-dir drift

writes `drift/metrics.json` (flat numbers, a DVC metric) and `drift/report.md`, prints one line and
exits 0 (no drift), 1 (drift) or 2 (nothing could be judged, or bad input). The parts: samples.py
(what each side shows of a target), divergence.py (the permutation tests), verdict.py (the tests
and rules -> a Verdict), probe.py (re-asking the endpoint), report.py (metrics.json and report.md)
and command.py (the thin main).

Per target (a flow `flow:<name>` or a prompt id, as golden examples and capture records name it):

- request length: total characters of the request's texts, reference = the eval examples' inputs;
- reply length: the same over the reply, reference = `--reference-results` outputs of that target;
- category mix (flows with `Flow.category`) and the fallback category's share (`Flow.fallback`);
- refusal rate: replies matching `drift.refusal_pattern`, reference = `--reference-results` outputs.

A flow's reference requests and categories also come from prompt examples whose `input` the flow's
request schema accepts (a prompt that classifies the same messages the flow receives), their
category being `Flow.category` of their `expected` where that applies: small golden sets hold only a
few end-to-end examples. Reference texts are redacted as captures are, so lengths compare like with like.

Each of these is a permutation test (divergence.py). It flags drift only when its p-value is below
`alpha / tests run` (Bonferroni: the whole report's false-alarm rate is at most `alpha`) AND its
effect reaches its bar (`min_ks`, `min_psi`, `max_share_increase`): with a million answers every
tiny shift is significant, and a shift nobody would act on is not drift. A target with fewer than
`min_records` captured answers is not judged on its distributions.

Across targets, three rules (no test: they are facts, not estimates):

- provider: an answer's provider (the response's `model` and `system_fingerprint`) that the
  reference results never saw is drift, however few answers carry it;
- negative feedback: the thumbs-down share of ratings above `max_negative_feedback_rate`, once
  there are `min_feedback` ratings;
- `--probe` (probe.py): a few eval examples re-asked now, without the cache, and paired with main's
  answers: drift when more than `max_probe_changed` of them changed, or another provider answered.
"""
