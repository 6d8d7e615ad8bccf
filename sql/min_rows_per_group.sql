-- name: min_rows_per_group
-- description: every group (each attribute alone and every intersection) has at least $min_group_rows rows
-- severity: warn
-- stage: source
SELECT grouping, "group", rows
FROM profile
WHERE rows < $min_group_rows
ORDER BY rows, grouping, "group"
