#!/usr/bin/env bash
# Issue 12's six runs: cranfield, cisi, nfcorpus x the dense and the BM25 retriever, N=50, 30
# seeded queries, the arms a drop-in user gets. Results: docs/benchmarks/drop_in/. ~45 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/benchmarks/drop_in}
Q=${QUERIES:-30}
ARMS=${ARMS:-retriever,fast,funnel-realtime,funnel-enterprise,funnel-enterprise-nodl,funnel-research}
for ds in cranfield cisi nfcorpus; do
  for r in dense bm25; do
    extra=""
    [ "$ds-$r" = "cranfield-dense" ] && extra=",langchain-enterprise"
    uptime
    .venv/bin/llmrerank bench --dataset ../shared/data/$ds --retriever $r --n 50 --queries "$Q" \
      --arms "$ARMS$extra" --no-progress --out "$OUT" --name "$ds-$r"
  done
done
uptime
