DROP TABLE service_replicas;
