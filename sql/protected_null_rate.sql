-- name: protected_null_rate
-- description: no protected attribute is missing in more than $max_null_share of the rows
-- severity: error
-- stage: source
SELECT grouping AS attribute, rows AS missing_rows, share AS missing_share
FROM profile
WHERE arity = 1 AND missing AND share > $max_null_share
ORDER BY share DESC
