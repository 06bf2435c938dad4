terraform {
  required_version = ">= 1.9.0" # validations that compare variables

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Partial configuration: `terraform init -backend-config=backend.hcl` (copy backend.hcl.example).
  backend "s3" {}
}
