# Minimal use of the module: the tier in eu-south-1, its DR copy in eu-west-1.
provider "aws" {
  region = "eu-south-1"
}

provider "aws" {
  alias  = "dr"
  region = "eu-west-1"
}

module "tier" {
  source = "../.."

  providers = {
    aws    = aws
    aws.dr = aws.dr
  }

  project                  = "dbtier"
  environment              = "example"
  availability_zones       = ["eu-south-1a", "eu-south-1b"]
  vpc_cidr                 = "10.50.0.0/16"
  private_subnet_cidrs     = ["10.50.1.0/24", "10.50.2.0/24"]
  app_cidr_blocks          = ["10.50.100.0/22"]
  db_instance_class        = "db.t4g.medium"
  db_allocated_storage     = 50
  db_max_allocated_storage = 200
  db_backup_retention_days = 7
  backup_bucket_name       = "example-dbtier-backups"
  backup_dr_bucket_name    = "example-dbtier-backups-dr"
  ssm_bucket_name          = "example-dbtier-ssm-transfer"
  pgbouncer_instance_type  = "t3.small"
  ops_instance_type        = "t3.medium"
}

output "ansible_inventory" {
  value = module.tier.ansible_inventory
}
