DROP INDEX system_events_by_workspace;
DROP INDEX system_events_by_user;
DROP TABLE system_event_reads;
DROP TABLE budget_reservations;
DROP TABLE budget_spend;
DROP TABLE budgets;
DROP TABLE usage_rollups;
DROP TABLE usage_ledger;
