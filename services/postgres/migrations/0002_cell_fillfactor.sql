-- Full cells are almost never updated after their first insert (measured:
-- 898,906 rows stored for 899,833 cell deltas in bench/fullretention), so
-- the free space fillfactor 80 keeps on each page for HOT updates is
-- wasted on the largest table. New pages are filled completely.
ALTER TABLE agg_cell SET (fillfactor = 100);
