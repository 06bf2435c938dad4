environment = "staging"

region             = "us-east-1"
dr_region          = "eu-west-1"
availability_zones = ["us-east-1a", "us-east-1b"]

vpc_cidr             = "10.41.0.0/16"
private_subnet_cidrs = ["10.41.1.0/24", "10.41.2.0/24"]
app_cidr_blocks      = ["10.41.100.0/22"]

# A way out through one NAT gateway (staging installs from the public Debian mirrors; one zone
# is enough here). AWS APIs and S3 go through the VPC endpoints either way.
enable_nat_gateway  = true
public_subnet_cidrs = ["10.41.201.0/24"]

db_engine_version        = "15"
db_instance_class        = "db.t4g.medium"
db_allocated_storage     = 50
db_max_allocated_storage = 200
db_multi_az              = true
db_backup_retention_days = 7
db_deletion_protection   = true
db_skip_final_snapshot   = false
db_performance_insights  = true
db_monitoring_interval   = 60

backup_bucket_name    = "mockupaws-dbtier-staging-backups"
backup_dr_bucket_name = "mockupaws-dbtier-staging-backups-dr"
# dbtier keeps backups 30 days (Ansible's dbtier_retention_days comes from here); S3 expires
# them 7 days later (the interval between base backups), checked at plan time.
backup_retention_days  = 30
backup_expiration_days = 37

# Alerts: every CloudWatch alarm and Alertmanager publish to the SNS topic dbtier-staging-alerts.
# PLACEHOLDER address: replace it with the team's real on-call address before applying (each
# address must confirm the mail AWS sends). Paging services: alarm_sns_topic_arns or an HTTPS
# subscription, see docs/DEPLOYMENT.md.
alert_email_addresses = ["oncall-dbtier@example.com"]

pgbouncer_count         = 2
pgbouncer_instance_type = "t3.small"
ops_instance_type       = "t3.medium"

# Ansible connects over SSM Session Manager; files go through this bucket.
ssm_bucket_name = "mockupaws-dbtier-staging-ssm-transfer"
