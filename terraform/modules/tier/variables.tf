# Every optional variable has nullable = false: an environment passes null for "not set in my
# tfvars" and gets the default declared here, once.

# --- naming ---------------------------------------------------------------------------------

variable "environment" {
  description = "Environment name (staging, production); part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lowercase letters and digits."
  }
}

variable "project" {
  description = "Project prefix of every resource name (the environments' default: dbtier)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource (the environment's Project/Environment/ManagedBy and extra tags)."
  type        = map(string)
  default     = {}
  nullable    = false
}

# --- network --------------------------------------------------------------------------------

variable "availability_zones" {
  description = "Two or more availability zones of the primary region."
  type        = list(string)
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
}

variable "private_subnet_cidrs" {
  description = "One private subnet CIDR per availability zone."
  type        = list(string)
}

variable "app_cidr_blocks" {
  description = "Application tier CIDRs allowed to reach PgBouncer on 6432."
  type        = list(string)
}

variable "enable_nat_gateway" {
  description = <<-EOT
    A way out to the internet for the private subnets (public subnets from public_subnet_cidrs,
    internet gateway, NAT gateways, 0.0.0.0/0 routes). Off by default: AWS APIs are reached
    through VPC endpoints and S3 through its gateway endpoint, and production expects packages
    from a mirror inside the network or a baked AMI, so it has no path to the internet at all.
    Turn it on where hosts install from public mirrors (staging).
  EOT
  type        = bool
  default     = false
  nullable    = false
}

variable "public_subnet_cidrs" {
  description = "Public subnets of the NAT gateways, one per availability zone in order (one entry = a single NAT gateway). Only with enable_nat_gateway."
  type        = list(string)
  default     = []
  nullable    = false
}

# --- RDS ------------------------------------------------------------------------------------

variable "db_engine_version" {
  description = "PostgreSQL version of RDS (major or major.minor); its major is the ansible_inventory variable dbtier_postgresql_major."
  type        = string
  default     = "15"
  nullable    = false
}

variable "db_allow_major_version_upgrade" {
  description = "Let RDS perform a major version upgrade when db_engine_version's major changes (true for that one apply only)."
  type        = bool
  default     = false
  nullable    = false
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_allocated_storage" {
  description = "RDS initial storage in GiB."
  type        = number
}

variable "db_max_allocated_storage" {
  description = "RDS storage autoscaling ceiling in GiB."
  type        = number
}

variable "db_name" {
  description = "Application database name."
  type        = string
  default     = "mockupaws"
  nullable    = false
}

variable "db_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
  default     = true
  nullable    = false
}

variable "db_backup_retention_days" {
  description = "RDS automated backup retention = point-in-time recovery window, days."
  type        = number
}

variable "db_deletion_protection" {
  description = "RDS deletion protection."
  type        = bool
  default     = true
  nullable    = false
}

variable "db_skip_final_snapshot" {
  description = "Destroy RDS without a final snapshot."
  type        = bool
  default     = false
  nullable    = false
}

variable "db_performance_insights" {
  description = "RDS Performance Insights."
  type        = bool
  default     = true
  nullable    = false
}

variable "db_monitoring_interval" {
  description = "RDS enhanced monitoring interval, seconds (0 off)."
  type        = number
  default     = 60
  nullable    = false
}

# --- alerting -------------------------------------------------------------------------------

variable "alert_email_addresses" {
  description = "Email addresses subscribed to the tier's alert topic (<project>-<environment>-alerts); each must confirm the mail AWS sends. Every CloudWatch alarm and Alertmanager publish there."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "alarm_sns_topic_arns" {
  description = "Further SNS topics (e.g. an existing paging topic) notified by every CloudWatch alarm of the tier, besides its own alert topic."
  type        = list(string)
  default     = []
  nullable    = false
}

# --- backups --------------------------------------------------------------------------------

variable "backup_bucket_name" {
  description = "Primary backup bucket (globally unique name)."
  type        = string
}

variable "backup_dr_bucket_name" {
  description = "DR backup bucket (globally unique name) in the aws.dr region."
  type        = string
}

variable "backup_prefix" {
  description = "Key prefix of dbtier's backup repository inside the buckets; the ops host may only touch it."
  type        = string
  default     = "dbtier/"
  nullable    = false
}

variable "backup_retention_days" {
  description = "dbtier's backup retention in days: the ansible_inventory variable dbtier_retention_days (`dbtier backup cleanup --days`). The S3 lifecycle is checked against it."
  type        = number
  default     = 30
  nullable    = false
}

variable "backup_retention_margin_days" {
  description = "Days S3 keeps backup objects beyond backup_retention_days (at least 1): dbtier keeps the newest base backup from before its cutoff, so cover the interval between base backups."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.backup_retention_margin_days >= 1
    error_message = "backup_retention_margin_days must be at least 1: S3 must never delete a backup dbtier still keeps."
  }
}

variable "backup_expiration_days" {
  description = "Days after which S3 expires backup objects in both buckets; must be at least backup_retention_days + backup_retention_margin_days (plan fails otherwise)."
  type        = number
  default     = 37
  nullable    = false

  validation {
    condition     = var.backup_expiration_days >= var.backup_retention_days + var.backup_retention_margin_days
    error_message = "backup_expiration_days (${var.backup_expiration_days}) must be at least backup_retention_days (${var.backup_retention_days}) + backup_retention_margin_days (${var.backup_retention_margin_days}) = ${var.backup_retention_days + var.backup_retention_margin_days}: S3 would delete backups dbtier still keeps."
  }
}

variable "backup_noncurrent_expiration_days" {
  description = "Days S3 keeps deleted or overwritten backup object versions; null = backup_expiration_days. Must also be at least backup_retention_days + backup_retention_margin_days, so that a backup deleted inside the retention window stays recoverable."
  type        = number
  default     = null

  validation {
    condition     = var.backup_noncurrent_expiration_days == null || try(var.backup_noncurrent_expiration_days >= var.backup_retention_days + var.backup_retention_margin_days, false)
    error_message = "backup_noncurrent_expiration_days (${coalesce(var.backup_noncurrent_expiration_days, 0)}) must be null or at least backup_retention_days (${var.backup_retention_days}) + backup_retention_margin_days (${var.backup_retention_margin_days}) = ${var.backup_retention_days + var.backup_retention_margin_days}: a backup deleted inside the retention window must stay recoverable."
  }
}

variable "backup_multi_region_key" {
  description = "Multi-Region backup key with a replica in the DR region (see modules/backup_buckets)."
  type        = bool
  default     = true
  nullable    = false
}

variable "backup_force_destroy" {
  description = "Allow destroying non-empty backup buckets (throwaway environments only)."
  type        = bool
  default     = false
  nullable    = false
}

# --- hosts ----------------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI of the hosts; null looks up the latest official Debian 12 image."
  type        = string
  default     = null
}

variable "pgbouncer_count" {
  description = "Number of PgBouncer hosts (spread over the availability zones)."
  type        = number
  default     = 2
  nullable    = false
}

variable "pgbouncer_instance_type" {
  description = "Instance type of the PgBouncer hosts."
  type        = string
}

variable "pgbouncer_health_port" {
  description = "Port of the HTTP health endpoint Ansible serves on the PgBouncer hosts (ansible_inventory variable pgbouncer_health_port); the NLB checks it, the VPC CIDR may reach it."
  type        = number
  default     = 8008
  nullable    = false
}

variable "node_exporter_port" {
  description = "Port of the Prometheus node exporter on the hosts (ansible_inventory variable monitoring_node_exporter_port): the PgBouncer hosts accept it from the ops host, where Prometheus runs."
  type        = number
  default     = 9100
  nullable    = false
}

variable "pgbouncer_health_path" {
  description = "Path of that endpoint (ansible_inventory variable pgbouncer_health_path): 200 when `SELECT 1` through the local PgBouncer works."
  type        = string
  default     = "/health"
  nullable    = false
}

variable "ops_instance_type" {
  description = "Instance type of the ops and backup host."
  type        = string
}

variable "ssh_key_name" {
  description = "EC2 key pair for break-glass access; null (the default) with SSM Session Manager. No security group opens 22 either way."
  type        = string
  default     = null
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the EC2 hosts."
  type        = bool
  default     = true
  nullable    = false
}

variable "nlb_deletion_protection" {
  description = "Deletion protection of the PgBouncer NLB."
  type        = bool
  default     = true
  nullable    = false
}

# --- Ansible --------------------------------------------------------------------------------

variable "ssm_bucket_name" {
  description = "Bucket the amazon.aws.aws_ssm connection moves files through (globally unique name; ansible_aws_ssm_bucket_name)."
  type        = string
}

variable "ansible_connection" {
  description = "How Ansible reaches the hosts (ansible_inventory variable ansible_connection): amazon.aws.aws_ssm, as no security group opens SSH."
  type        = string
  default     = "amazon.aws.aws_ssm"
  nullable    = false
}

variable "ansible_user" {
  description = "Remote user for SSH connections (admin on Debian AMIs); the aws_ssm connection ignores it and uses become."
  type        = string
  default     = "admin"
  nullable    = false
}
