-- name: min_rows_per_group_label
-- description: every intersectional group has at least $min_cell_rows rows of each label class (positive and negative)
-- severity: warn
-- stage: source
SELECT grouping, "group", positives, labelled_rows - positives AS negatives
FROM profile
WHERE arity = (SELECT max(arity) FROM profile)
  AND (positives < $min_cell_rows OR labelled_rows - positives < $min_cell_rows)
ORDER BY grouping, "group"
