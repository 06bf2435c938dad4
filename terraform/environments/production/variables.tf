# The values of this environment (terraform.tfvars). Descriptions, defaults and checks live in
# terraform/modules/tier/variables.tf: optional ones default to null here, which the module
# turns into its own default.

variable "environment" {
  description = "Environment name (staging, production); part of every resource name."
  type        = string
}

variable "project" {
  description = "Project prefix of every resource name and the Project tag."
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

variable "extra_tags" {
  description = "Tags added to every resource, besides Project/Environment/ManagedBy."
  type        = map(string)
  default     = {}
}

# --- passed to module "tier" (see its variables.tf) ------------------------------------------

variable "availability_zones" {
  type = list(string)
}

variable "vpc_cidr" {
  type = string
}

variable "private_subnet_cidrs" {
  type = list(string)
}

variable "app_cidr_blocks" {
  type = list(string)
}

variable "enable_nat_gateway" {
  type    = bool
  default = null
}

variable "public_subnet_cidrs" {
  type    = list(string)
  default = null
}

variable "db_engine_version" {
  type    = string
  default = null
}

variable "db_allow_major_version_upgrade" {
  type    = bool
  default = null
}

variable "db_instance_class" {
  type = string
}

variable "db_allocated_storage" {
  type = number
}

variable "db_max_allocated_storage" {
  type = number
}

variable "db_name" {
  type    = string
  default = null
}

variable "db_multi_az" {
  type    = bool
  default = null
}

variable "db_backup_retention_days" {
  type = number
}

variable "db_deletion_protection" {
  type    = bool
  default = null
}

variable "db_skip_final_snapshot" {
  type    = bool
  default = null
}

variable "db_performance_insights" {
  type    = bool
  default = null
}

variable "db_monitoring_interval" {
  type    = number
  default = null
}

variable "alert_email_addresses" {
  type    = list(string)
  default = null
}

variable "alarm_sns_topic_arns" {
  type    = list(string)
  default = null
}

variable "backup_bucket_name" {
  type = string
}

variable "backup_dr_bucket_name" {
  type = string
}

variable "backup_prefix" {
  type    = string
  default = null
}

variable "backup_retention_days" {
  type    = number
  default = null
}

variable "backup_retention_margin_days" {
  type    = number
  default = null
}

variable "backup_expiration_days" {
  type    = number
  default = null
}

variable "backup_noncurrent_expiration_days" {
  type    = number
  default = null
}

variable "backup_force_destroy" {
  type    = bool
  default = null
}

variable "ami_id" {
  type    = string
  default = null
}

variable "pgbouncer_count" {
  type    = number
  default = null
}

variable "pgbouncer_instance_type" {
  type = string
}

variable "pgbouncer_health_port" {
  type    = number
  default = null
}

variable "pgbouncer_health_path" {
  type    = string
  default = null
}

variable "ops_instance_type" {
  type = string
}

variable "ssh_key_name" {
  type    = string
  default = null
}

variable "detailed_monitoring" {
  type    = bool
  default = null
}

variable "nlb_deletion_protection" {
  type    = bool
  default = null
}

variable "ssm_bucket_name" {
  type = string
}

variable "ansible_connection" {
  type    = string
  default = null
}

variable "ansible_user" {
  type    = string
  default = null
}
