# The gha-mlops EC2 runner AMI with Packer (UNTESTED: packer is not run by this repository's
# tests; setup.sh, which it runs, is checked with bash -n and shellcheck). From the repository
# root:
#   packer init runner/ec2/ami.pkr.hcl
#   packer build -var region=us-east-1 -var gha_mlops_version=0.9.0 runner/ec2/ami.pkr.hcl
# then put the AMI id where runners.yaml's `ami: resolve:ssm:/gha-mlops/runner-ami` finds it:
#   aws ssm put-parameter --name /gha-mlops/runner-ami --type String --overwrite --value ami-...
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type        = string
  default     = "g5.xlarge"
  description = "The builder: a GPU type, so that the driver install can be checked."
}

variable "gha_mlops_version" {
  type    = string
  default = ""
}

variable "install_nvidia" {
  type    = string
  default = "1"
}

source "amazon-ebs" "runner" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = "gha-mlops-runner-{{timestamp}}"
  ssh_username  = "ubuntu"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 60
    volume_type           = "gp3"
    delete_on_termination = true
  }
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "enabled"
  }
  tags = {
    Name = "gha-mlops-runner"
  }
}

build {
  sources = ["source.amazon-ebs.runner"]

  provisioner "file" {
    source      = "runner"
    destination = "/tmp"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "GHA_MLOPS_VERSION=${var.gha_mlops_version}",
      "INSTALL_NVIDIA=${var.install_nvidia}",
    ]
    inline = ["bash /tmp/runner/ec2/setup.sh"]
  }
}
