-- name: splits_non_empty
-- description: train, validation and test each have at least one curated row
-- severity: error
-- stage: curated
SELECT s.split
FROM (VALUES ('train'), ('validation'), ('test')) AS s(split)
LEFT JOIN (SELECT split, count(*) AS n FROM roles GROUP BY split) AS c ON c.split = s.split
WHERE c.n IS NULL
