variable "environment" {
  description = "Environment name (staging, production); part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lowercase letters and digits."
  }
}

variable "project" {
  description = "Project prefix of every resource name."
  type        = string
  default     = "dbtier"
}

variable "region" {
  description = "Primary AWS region (RDS, hosts, primary backup bucket)."
  type        = string
}

variable "dr_region" {
  description = "Disaster-recovery region (replica bucket and key). Must differ from region."
  type        = string

  validation {
    condition     = var.dr_region != var.region
    error_message = "dr_region must differ from region: a DR copy in the same region is no DR."
  }
}

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

variable "db_engine_version" {
  description = "PostgreSQL version of RDS (major or major.minor)."
  type        = string
  default     = "15"
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
}

variable "db_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "RDS automated backup retention = point-in-time recovery window, days."
  type        = number
}

variable "db_deletion_protection" {
  description = "RDS deletion protection."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Destroy RDS without a final snapshot."
  type        = bool
  default     = false
}

variable "db_performance_insights" {
  description = "RDS Performance Insights."
  type        = bool
  default     = true
}

variable "db_monitoring_interval" {
  description = "RDS enhanced monitoring interval, seconds (0 off)."
  type        = number
  default     = 60
}

variable "alarm_sns_topic_arns" {
  description = "SNS topics notified by the RDS alarms."
  type        = list(string)
  default     = []
}

variable "backup_bucket_name" {
  description = "Primary backup bucket (globally unique name)."
  type        = string
}

variable "backup_dr_bucket_name" {
  description = "DR backup bucket (globally unique name)."
  type        = string
}

variable "backup_retention_days" {
  description = "Days backup objects are kept in S3."
  type        = number
}

variable "backup_prefix" {
  description = "Key prefix of dbtier's backup repository inside the buckets; the ops host may only touch it."
  type        = string
  default     = "dbtier/"
}

variable "backup_force_destroy" {
  description = "Allow destroying non-empty backup buckets (throwaway environments only)."
  type        = bool
  default     = false
}

variable "ami_id" {
  description = "AMI of the hosts; null looks up the latest official Debian 12 image."
  type        = string
  default     = null
}

variable "pgbouncer_count" {
  description = "Number of PgBouncer hosts (spread over the availability zones)."
  type        = number
  default     = 2
}

variable "pgbouncer_instance_type" {
  description = "Instance type of the PgBouncer hosts."
  type        = string
}

variable "ops_instance_type" {
  description = "Instance type of the ops and backup host."
  type        = string
}

variable "ssh_key_name" {
  description = "EC2 key pair for Ansible over SSH; null with SSM Session Manager."
  type        = string
  default     = null
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the EC2 hosts."
  type        = bool
  default     = true
}

variable "nlb_deletion_protection" {
  description = "Deletion protection of the PgBouncer NLB."
  type        = bool
  default     = true
}

variable "ansible_user" {
  description = "Remote user Ansible logs in as on the hosts (admin on Debian AMIs)."
  type        = string
  default     = "admin"
}

variable "extra_tags" {
  description = "Tags added to every resource, besides Project/Environment/ManagedBy."
  type        = map(string)
  default     = {}
}
