variable "identifier" {
  description = "RDS instance identifier, also the name prefix of its companions (e.g. dbtier-production)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,50}[a-z0-9]$", var.identifier)) && !strcontains(var.identifier, "--")
    error_message = "identifier must be lowercase letters, digits and single hyphens, start with a letter, end with a letter or digit, at most 52 characters."
  }
}

variable "engine_version" {
  description = "PostgreSQL engine version: a major (\"15\") or major.minor (\"15.7\"). The parameter group family follows the major."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^(1[3-9]|[2-9][0-9])(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL major (13 or later) optionally with a minor, e.g. 15 or 15.7."
  }
}

variable "allow_major_version_upgrade" {
  description = "Let RDS upgrade the engine to a new major version when engine_version's major changes. Off by default: set it true for the one apply that upgrades (after testing the upgrade on a restored copy), then false again."
  type        = bool
  default     = false
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m6g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must look like db.m6g.large."
  }
}

variable "allocated_storage" {
  description = "Initial storage in GiB (gp3)."
  type        = number
  default     = 100

  validation {
    condition     = var.allocated_storage >= 20 && var.allocated_storage <= 65536
    error_message = "allocated_storage must be between 20 and 65536 GiB."
  }
}

variable "max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB; 0 disables autoscaling."
  type        = number
  default     = 500

  validation {
    condition     = var.max_allocated_storage == 0 || var.max_allocated_storage >= 20
    error_message = "max_allocated_storage must be 0 (off) or at least 20 GiB."
  }
}

variable "db_name" {
  description = "Name of the application database created with the instance."
  type        = string
  default     = "mockupaws"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase PostgreSQL identifier (letters, digits, underscore; max 63)."
  }
}

variable "master_username" {
  description = "Master user name. Its password is generated and kept in Secrets Manager by RDS."
  type        = string
  default     = "dbtier_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "admin", "rdsadmin"], var.master_username)
    error_message = "master_username must be a lowercase identifier and not a reserved name (postgres, admin, rdsadmin)."
  }
}

variable "port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432

  validation {
    condition     = var.port >= 1150 && var.port <= 65535
    error_message = "port must be between 1150 and 65535 (RDS limits)."
  }
}

variable "multi_az" {
  description = "Run a synchronous standby in a second availability zone."
  type        = bool
  default     = true
}

variable "backup_retention_period" {
  description = "Days of automated backups kept; this is the point-in-time recovery window. 0 disables PITR and is refused."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_period >= 1 && var.backup_retention_period <= 35
    error_message = "backup_retention_period must be between 1 and 35 days (PITR needs at least 1)."
  }
}

variable "backup_window" {
  description = "Daily automated backup window (UTC), hh24:mi-hh24:mi; must not overlap maintenance_window."
  type        = string
  default     = "02:00-03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_window))
    error_message = "backup_window must look like 02:00-03:00."
  }
}

variable "maintenance_window" {
  description = "Weekly maintenance window (UTC), ddd:hh24:mi-ddd:hh24:mi."
  type        = string
  default     = "sun:04:00-sun:05:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):[0-2][0-9]:[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):[0-2][0-9]:[0-5][0-9]$", var.maintenance_window))
    error_message = "maintenance_window must look like sun:04:00-sun:05:00."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (turn off deliberately before a destroy)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot. Keep false anywhere data matters."
  type        = bool
  default     = false
}

variable "performance_insights_enabled" {
  description = "Enable Performance Insights (encrypted with the storage KMS key)."
  type        = bool
  default     = true
}

variable "performance_insights_retention_period" {
  description = "Performance Insights retention in days: 7, or a multiple of 31 up to 731."
  type        = number
  default     = 7

  validation {
    condition     = contains([7, 731], var.performance_insights_retention_period) || (var.performance_insights_retention_period % 31 == 0 && var.performance_insights_retention_period >= 31 && var.performance_insights_retention_period <= 713)
    error_message = "performance_insights_retention_period must be 7, a multiple of 31 up to 713, or 731."
  }
}

variable "monitoring_interval" {
  description = "Enhanced monitoring interval in seconds; 0 turns enhanced monitoring off."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.monitoring_interval)
    error_message = "monitoring_interval must be one of 0, 1, 5, 10, 15, 30, 60."
  }
}

variable "log_min_duration_statement" {
  description = "Log statements slower than this many milliseconds (-1 off)."
  type        = number
  default     = 200

  validation {
    condition     = var.log_min_duration_statement >= -1
    error_message = "log_min_duration_statement must be -1 (off) or a number of milliseconds."
  }
}

variable "extra_parameters" {
  description = "Additional parameter group settings: name => { value, apply_method (immediate | pending-reboot) }."
  type = map(object({
    value        = string
    apply_method = optional(string, "pending-reboot")
  }))
  default = {}

  validation {
    condition     = alltrue([for p in values(var.extra_parameters) : contains(["immediate", "pending-reboot"], p.apply_method)])
    error_message = "apply_method must be immediate or pending-reboot."
  }
}

variable "kms_key_arn" {
  description = "KMS key ARN for storage and Performance Insights encryption; null creates a dedicated key."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "subnet_ids" {
  description = "Private subnet ids in at least two availability zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must hold at least two subnets (two availability zones)."
  }
}

variable "security_group_ids" {
  description = "Security groups of the instance (the network module's rds group)."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids must not be empty."
  }
}

variable "alarm_actions" {
  description = "SNS topic ARNs notified by the CloudWatch alarms (and on recovery): the tier passes its alert topic."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", a))])
    error_message = "alarm_actions entries must be SNS topic ARNs."
  }
}

variable "alarm_cpu_percent" {
  description = "CPU utilisation alarm threshold, percent."
  type        = number
  default     = 80

  validation {
    condition     = var.alarm_cpu_percent > 0 && var.alarm_cpu_percent <= 100
    error_message = "alarm_cpu_percent must be in (0, 100]."
  }
}

variable "alarm_free_storage_gib" {
  description = "Free storage alarm threshold, GiB."
  type        = number
  default     = 10

  validation {
    condition     = var.alarm_free_storage_gib > 0
    error_message = "alarm_free_storage_gib must be positive."
  }
}

variable "alarm_connections" {
  description = "Database connections alarm threshold (PgBouncer keeps the server side well below max_connections)."
  type        = number
  default     = 400

  validation {
    condition     = var.alarm_connections > 0
    error_message = "alarm_connections must be positive."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
