-- name: label_values_allowed
-- description: every label is one of the comma-separated $allowed_labels (null labels fail too)
-- severity: error
-- stage: both
SELECT label, count(*) AS rows
FROM roles
WHERE label IS NULL OR NOT array_has(string_to_array($allowed_labels, ','), label)
GROUP BY label
ORDER BY rows DESC
