variable "name" {
  description = "Name prefix (e.g. dbtier-production); the role is <name>-ops."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "backup_bucket_arn" {
  description = "ARN of the primary backup bucket."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.backup_bucket_arn))
    error_message = "backup_bucket_arn must be an S3 bucket ARN (arn:aws:s3:::name)."
  }
}

variable "dr_bucket_arn" {
  description = "ARN of the DR bucket (dbtier verifies and, if needed, copies backups there)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.dr_bucket_arn))
    error_message = "dr_bucket_arn must be an S3 bucket ARN (arn:aws:s3:::name)."
  }
}

variable "object_prefixes" {
  description = "Key prefixes the ops host may read and write in both buckets (dbtier's repository root)."
  type        = list(string)
  default     = ["dbtier/"]

  validation {
    condition     = length(var.object_prefixes) > 0 && alltrue([for p in var.object_prefixes : can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", p))])
    error_message = "object_prefixes must be non-empty; each a relative prefix ending with '/' (no wildcards, no leading '/')."
  }
}

variable "backup_kms_key_arns" {
  description = "KMS keys of the backups (primary and its DR replica): envelope encryption and SSE-KMS."
  type        = list(string)

  validation {
    condition     = length(var.backup_kms_key_arns) > 0 && alltrue([for k in var.backup_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:", k))])
    error_message = "backup_kms_key_arns must be a non-empty list of KMS key ARNs."
  }
}

variable "rds_instance_arn" {
  description = "ARN of the RDS instance whose point-in-time restores the ops host drives."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:db:[a-z][a-z0-9-]*$", var.rds_instance_arn))
    error_message = "rds_instance_arn must be an RDS DB instance ARN."
  }
}

variable "rds_kms_key_arn" {
  description = "KMS key of the RDS storage (a restored instance is encrypted with it)."
  type        = string
}

variable "rds_subnet_group_name" {
  description = "DB subnet group a point-in-time restore is placed in."
  type        = string
}

variable "rds_parameter_group_name" {
  description = "DB parameter group a point-in-time restore uses."
  type        = string
}

variable "restore_suffix" {
  description = "Restored instances are named <source identifier><restore_suffix><anything>; the only ones the host may create or delete."
  type        = string
  default     = "-pitr-"

  validation {
    condition     = can(regex("^-[a-z0-9-]*-$", var.restore_suffix))
    error_message = "restore_suffix must start and end with '-' and hold lowercase letters, digits and hyphens."
  }
}

variable "ssm_session_manager" {
  description = "Attach AmazonSSMManagedInstanceCore to the ops role so that Ansible connects over SSM Session Manager (amazon.aws.aws_ssm) instead of SSH."
  type        = bool
  default     = true
}

variable "secret_arns" {
  description = "Secrets Manager secrets the ops host may read (e.g. the RDS master secret)."
  type        = list(string)
  default     = []
}

variable "alerts_sns_topic_arn" {
  description = "The tier's alert topic (alerting module): the ops host (Alertmanager) may publish to it and to nothing else. null: no SNS permission."
  type        = string
  default     = null

  validation {
    condition     = var.alerts_sns_topic_arn == null || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", var.alerts_sns_topic_arn))
    error_message = "alerts_sns_topic_arn must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME) or null."
  }
}

variable "alerts_kms_key_arn" {
  description = "KMS key encrypting the alert topic: the ops host may use it through SNS only. Required with alerts_sns_topic_arn."
  type        = string
  default     = null

  validation {
    condition     = (var.alerts_kms_key_arn == null) == (var.alerts_sns_topic_arn == null) && (var.alerts_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.alerts_kms_key_arn)))
    error_message = "alerts_kms_key_arn must be the KMS key ARN of the alert topic, given together with alerts_sns_topic_arn (or both null)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
