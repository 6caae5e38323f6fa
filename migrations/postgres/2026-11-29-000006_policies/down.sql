DROP TABLE webhook_deliveries;
DROP TABLE org_webhooks;
DROP TABLE policy_alerts;
DROP TABLE policy_violations;
DROP TABLE policies;
