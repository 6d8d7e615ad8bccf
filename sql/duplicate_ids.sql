-- name: duplicate_ids
-- description: the id column (source.id_column) is unique in the source
-- severity: error
-- stage: source
SELECT id, count(*) AS copies
FROM roles
WHERE id IS NOT NULL
GROUP BY id
HAVING count(*) > 1
ORDER BY copies DESC, id
