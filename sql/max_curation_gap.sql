-- name: max_curation_gap
-- description: every curated training stratum is within $max_gap (absolute share) of its target
-- severity: error
-- stage: curated
SELECT *, abs(share_after - target_share) AS gap
FROM curation
WHERE target_share IS NOT NULL
  AND abs(share_after - target_share) > $max_gap
ORDER BY gap DESC
