-- name: weights_finite_positive
-- description: every curated sample_weight is finite and positive
-- severity: error
-- stage: curated
SELECT *
FROM data
WHERE sample_weight IS NULL
   OR isnan(sample_weight)
   OR sample_weight <= 0
   OR sample_weight = 'Infinity'::double
