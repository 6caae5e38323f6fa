ALTER TABLE conversations DROP COLUMN last_seq;
