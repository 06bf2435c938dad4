environment = "production"

region             = "us-east-1"
dr_region          = "eu-west-1"
availability_zones = ["us-east-1a", "us-east-1b"]

vpc_cidr             = "10.40.0.0/16"
private_subnet_cidrs = ["10.40.1.0/24", "10.40.2.0/24"]
app_cidr_blocks      = ["10.40.100.0/22"]

# No way to the internet: AWS APIs and S3 through the VPC endpoints, packages from the mirror
# inside the network or baked into the AMI.
enable_nat_gateway = false

db_engine_version        = "15"
db_instance_class        = "db.r6g.large"
db_allocated_storage     = 200
db_max_allocated_storage = 1000
db_multi_az              = true
db_backup_retention_days = 14
db_deletion_protection   = true
db_skip_final_snapshot   = false
db_performance_insights  = true
db_monitoring_interval   = 30

backup_bucket_name    = "mockupaws-dbtier-production-backups"
backup_dr_bucket_name = "mockupaws-dbtier-production-backups-dr"
# dbtier keeps backups 35 days (Ansible's dbtier_retention_days comes from here); S3 expires
# them 7 days later (the interval between base backups), checked at plan time.
backup_retention_days  = 35
backup_expiration_days = 42

# Alerts: every CloudWatch alarm and Alertmanager publish to the SNS topic dbtier-production-alerts.
# PLACEHOLDER address: replace it with the team's real on-call address before applying (each
# address must confirm the mail AWS sends). Paging services: alarm_sns_topic_arns or an HTTPS
# subscription, see docs/DEPLOYMENT.md.
alert_email_addresses = ["oncall-dbtier@example.com"]

pgbouncer_count         = 2
pgbouncer_instance_type = "t3.medium"
ops_instance_type       = "t3.large"

# Ansible connects over SSM Session Manager; files go through this bucket.
ssm_bucket_name = "mockupaws-dbtier-production-ssm-transfer"
